//! A minimal HTTP/1.1 client over one keep-alive TCP connection: enough for the abuse scenario to send API
//! requests (well-formed or not, complete or not) and read the status of each answer. Like [`crate::ws`], it
//! is built for the load generator: no pooling, no redirects, no TLS.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub struct HttpConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` read but not yet consumed.
    end: usize,
    /// The server said `Connection: close` (or closed): the connection cannot carry another request.
    pub closed: bool,
}

/// What came back: the status line's code and the bytes of the whole answer.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub bytes: usize,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl HttpConn {
    /// Opens a TCP connection from `source` (a loopback address of its own, when given).
    pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<HttpConn> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(HttpConn { stream, buf: vec![0; 16 * 1024], end: 0, closed: false })
    }

    /// Sends raw bytes (a request head, or part of a body).
    pub async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Sends a request with a JSON body (`None`: no body) and reads its answer.
    pub async fn request(&mut self, method: &str, path: &str, token: &str, body: Option<&str>) -> io::Result<Answer> {
        let body = body.unwrap_or("");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.send(head.as_bytes()).await?;
        self.answer().await
    }

    /// Reads one answer: the head, then a `Content-Length` or chunked body.
    pub async fn answer(&mut self) -> io::Result<Answer> {
        let head_end = loop {
            if let Some(i) = self.buf[..self.end].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = head.get(9..12).and_then(|s| s.parse().ok()).ok_or_else(|| err("no status line"))?;
        let header = |name: &str| {
            head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim_start_matches(':').trim().to_string()))
        };
        self.closed = header("connection").is_some_and(|v| v == "close");
        let total = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            self.chunked_end(head_end).await?
        } else {
            let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            while self.end < head_end + len {
                self.fill().await?;
            }
            head_end + len
        };
        self.buf.copy_within(total..self.end, 0);
        self.end -= total;
        Ok(Answer { status, bytes: total })
    }

    /// Where a chunked body that starts at `at` ends (after its last, empty chunk).
    async fn chunked_end(&mut self, mut at: usize) -> io::Result<usize> {
        loop {
            let line_end = loop {
                if let Some(i) = self.buf[at..self.end].windows(2).position(|w| w == b"\r\n") {
                    break at + i;
                }
                self.fill().await?;
            };
            let size = std::str::from_utf8(&self.buf[at..line_end]).unwrap_or("").split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size.trim(), 16).map_err(|_| err("bad chunk size"))?;
            let next = line_end + 2 + size + 2;
            while self.end < next {
                self.fill().await?;
            }
            at = next;
            if size == 0 {
                return Ok(at);
            }
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.end == self.buf.len() {
            let len = self.buf.len();
            self.buf.resize(len * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            self.closed = true;
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by the server"));
        }
        self.end += n;
        Ok(())
    }
}
