//! The server binary at `RUST_LOG=trace`, with what it writes to stderr kept: for tests of what its log says,
//! and what it must never say.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use super::WAIT;

pub struct Logged {
    child: std::process::Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Logged {
    /// Starts `boardcast serve` on a free port, with `env` beside `RUST_LOG=trace`; returns it and its address
    /// once it listens.
    pub fn start(db_url: &str, env: &[(&str, &str)]) -> (Logged, String) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_boardcast"))
            .arg("serve")
            .env("DATABASE_URL", db_url)
            .env("BOARDCAST_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let lines = BufReader::new(child.stderr.take().unwrap());
        let keep = stderr.clone();
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != '"').collect();
                    let _ = addr_tx.send(addr);
                }
                let mut all = keep.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let addr = addr_rx.recv_timeout(WAIT).expect("the server did not say where it listens");
        (Logged { child, stderr }, addr)
    }

    /// Everything logged so far.
    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}
