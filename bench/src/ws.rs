//! A minimal WebSocket client for the load generator: just enough of RFC 6455 to authenticate, join and read
//! frames without allocating per message. Server frames are never masked and never fragmented by
//! boardcast; client frames are masked (with a zero key: valid, and it leaves the payload as is).
//!
//! Why not tokio-tungstenite: the load generator shares two cores with the server and PostgreSQL, and at
//! 250,000 deliveries/s every copy and allocation per frame shows. Here one `read` takes many frames at once
//! and each is looked at in place.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const OP_TEXT: u8 = 1;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

fn err(msg: impl Into<String>) -> io::Error {
    io::Error::other(msg.into())
}

impl Conn {
    /// Opens a TCP connection (from `source`, when given, so that more than one loopback address can be used
    /// for more than ~28,000 connections) and performs the upgrade with `Authorization: Bearer <token>`.
    pub async fn connect(addr: SocketAddr, source: Option<IpAddr>, token: &str, buf_size: usize) -> io::Result<Conn> {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(ip) = source {
            no_port_at_bind(&socket);
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let mut stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        stream.write_all(upgrade_request(addr, token).as_bytes()).await?;
        let mut buf = vec![0u8; buf_size.max(1024)];
        let mut end = 0;
        let header_end = loop {
            if end == buf.len() {
                return Err(err("handshake response too long"));
            }
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Err(err("connection closed during the handshake"));
            }
            end += n;
            if let Some(i) = buf[..end].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        if !buf.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&buf[..header_end.min(200)]).into_owned();
            return Err(err(format!("upgrade refused: {}", head.lines().next().unwrap_or(""))));
        }
        Ok(Conn { stream, buf, start: header_end, end })
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else if payload.len() <= u16::MAX as usize {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        frame.extend_from_slice(&[0, 0, 0, 0]); // the mask key: zero, so the payload goes as is
        frame.extend_from_slice(payload);
        self.stream.write_all(&frame).await
    }

    /// Sends bytes as they are (frames built by the caller).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Waits for more bytes. `Ok(false)` when the peer closed the connection.
    pub async fn read_more(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len();
                self.buf.resize(len * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n > 0)
    }

    /// The next complete frame in the buffer, if any: `(opcode, payload)`.
    pub fn next_frame(&mut self) -> Option<(u8, &[u8])> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if masked {
            at += 4; // servers do not mask; tolerated, payload left as is
        }
        if b.len() < at + len {
            // Make room for a frame larger than the buffer.
            let need = at + len;
            if need > self.buf.len() {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
                self.buf.resize(need.next_power_of_two(), 0);
            }
            return None;
        }
        let s = self.start + at;
        self.start = s + len;
        Some((opcode, &self.buf[s..s + len]))
    }
}

/// Asks the kernel to pick the source port at `connect`, not at `bind` (IP_BIND_ADDRESS_NO_PORT). A port taken
/// by `bind` is reserved on every address for every destination, so tens of thousands of bound clients would
/// leave too few ports for anyone else's outgoing connections (nginx's to the servers, on the same machine);
/// chosen at `connect`, a port is only unique per (source, destination) pair. Best effort.
fn no_port_at_bind(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from `one` for the socket's own descriptor.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// The upgrade request [`Conn::connect`] sends.
pub fn upgrade_request(addr: SocketAddr, token: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {token}\r\n\r\n"
    )
}

/// The status code of a close frame's payload, if it has one.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// The integer after `"key":` in a JSON frame (the first occurrence).
pub fn int_after(frame: &[u8], key: &[u8]) -> Option<i64> {
    let i = find(frame, key)? + key.len();
    let mut n: i64 = 0;
    let mut any = false;
    for &c in &frame[i..] {
        if c.is_ascii_digit() {
            n = n * 10 + (c - b'0') as i64;
            any = true;
        } else {
            break;
        }
    }
    any.then_some(n)
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match haystack[i..=last].iter().position(|&c| c == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &haystack[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_seq_and_marker() {
        let f =
            br#"{"op":"event","project":"x","seq":42,"table":"tasks","action":"insert","row":{"title": "bcb#17#"}}"#;
        assert_eq!(int_after(f, b"\"seq\":"), Some(42));
        assert_eq!(int_after(f, b"bcb#"), Some(17));
        assert_eq!(int_after(f, b"nope"), None);
    }
}
