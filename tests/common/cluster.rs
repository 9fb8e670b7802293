//! A PostgreSQL cluster owned by one test, for tests that stop or restart the server. Never the shared
//! server: made with initdb in a temporary folder, on a free port, and removed when dropped. initdb and pg_ctl
//! refuse to run as root, so as root they run as the `postgres` account.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn run_pg(bin: &Path, tool: &str, args: &[&str]) -> std::process::Output {
    let exe = bin.join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    cmd.args(args).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    pub fn start() -> Cluster {
        let root = env!("CARGO_MANIFEST_DIR");
        let out = Command::new(format!("{root}/scripts/pg.sh")).arg("bindir").output().expect("scripts/pg.sh");
        assert!(out.status.success(), "no initdb found: these tests need PostgreSQL's server binaries");
        let bin = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let base = std::env::temp_dir().join("boardcast-test-clusters");
        std::fs::create_dir_all(&base).unwrap();
        let dir = base.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&dir).unwrap();
        if is_root() {
            Command::new("chmod").arg("755").arg(&base).status().unwrap();
            Command::new("chown").arg("postgres").arg(&dir).status().unwrap();
        }
        let d = dir.to_str().unwrap();
        let o = run_pg(&bin, "initdb", &["-D", d, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        assert!(o.status.success(), "initdb failed: {}", String::from_utf8_lossy(&o.stderr));
        let port = free_port();
        // fsync off is safe here: `stop` kills PostgreSQL, not the machine, so written WAL survives in the
        // page cache. synchronous_commit must stay on: with it off, a crash loses transactions whose events
        // clients have already received (seen happen: the test below caught it).
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{d}'\nfsync = off\n\
             full_page_writes = off\nmax_connections = 100\nshared_buffers = 64MB\n"
        );
        let conf_path = dir.join("postgresql.conf");
        let mut all = std::fs::read_to_string(&conf_path).unwrap();
        all.push_str(&conf);
        std::fs::write(&conf_path, all).unwrap();
        let c = Cluster { dir, port, bin };
        c.pg_ctl_start();
        c
    }

    /// A URL for the cluster's `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl_start(&self) {
        let d = self.dir.to_str().unwrap();
        let log = format!("{d}/server.log");
        let o = run_pg(&self.bin, "pg_ctl", &["-D", d, "-l", &log, "-w", "-t", "60", "start"]);
        assert!(o.status.success(), "pg_ctl start failed: {}", String::from_utf8_lossy(&o.stderr));
    }

    /// Stops the server the hard way (every connection is cut), as a crash or a failover would.
    pub fn stop(&self) {
        let d = self.dir.to_str().unwrap();
        let o = run_pg(&self.bin, "pg_ctl", &["-D", d, "-m", "immediate", "-w", "stop"]);
        assert!(o.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&o.stderr));
    }

    pub fn start_again(&self) {
        self.pg_ctl_start();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let d = self.dir.to_str().unwrap().to_string();
        let _ = run_pg(&self.bin, "pg_ctl", &["-D", &d, "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
