//! The servers under test, and the probes that measure them.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// One of the servers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Coop,
    Tokio,
    Floor,
    /// coop with the plain `read`/`write_all` loop: measured on request only
    /// (`--instructions plain`), not in the full run.
    Plain,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Coop, Kind::Tokio, Kind::Floor];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Coop => "coop",
            Kind::Tokio => "tokio",
            Kind::Floor => "floor",
            Kind::Plain => "plain",
        }
    }

    fn command(self, bin: &Path) -> (PathBuf, Vec<&'static str>) {
        match self {
            Kind::Coop => (bin.join("coop-echo"), vec!["serve", "--quiet"]),
            Kind::Tokio => (bin.join("tokio-echo"), vec![]),
            Kind::Floor => (bin.join("floor-echo"), vec![]),
            Kind::Plain => (bin.join("plain-echo"), vec![]),
        }
    }
}

/// A running server, pinned to core 0; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `kind` on a free loopback port, under `wrapper` (e.g. valgrind) if given.
    pub fn start(kind: Kind, bin: &Path, wrapper: &[String]) -> io::Result<Server> {
        let (program, args) = kind.command(bin);
        let mut child = Command::new("taskset")
            .args(["-c", "0"])
            .args(wrapper)
            .arg(&program)
            .args(args)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some((_, addr)) = line.split_once("Listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().map_err(io::Error::other)?,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "{} did not say 'Listening on'",
                    program.display()
                )));
            }
        };
        Ok(Server { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::other("no VmRSS"))
    }

    /// Stops the server with SIGTERM (so valgrind writes its profile) and waits.
    pub fn terminate(mut self) -> io::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `coop-echo bench` pinned to core 1 against `server`, returning its JSON report.
pub fn load(bin: &Path, server: &Server, args: &[String]) -> io::Result<serde_json::Value> {
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(bin.join("coop-echo"))
        .arg("bench")
        .args(["--port", &server.addr.port().to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--json", "--quiet"])
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        io::Error::other(format!(
            "coop-echo bench {args:?} gave no report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// Counts the system calls `pid` makes over `window` (perf's syscall tracepoint).
pub fn count_syscalls(pid: u32, window: Duration) -> io::Result<u64> {
    let out = Command::new("perf")
        .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p"])
        .arg(pid.to_string())
        .args(["--", "sleep", &format!("{}", window.as_secs_f64())])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("perf stat gave no count: {text}")))
}

/// Opens `n` connections, each answering one message so its handler is in its steady
/// state, and returns the server's resident memory per connection while they sit idle.
pub fn idle_memory_per_connection(server: &Server, n: usize) -> io::Result<f64> {
    let before = server.rss()?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(server.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(b"x\n")?;
        let mut reply = [0; 6];
        stream.read_exact(&mut reply)?;
        held.push(stream);
    }
    let after = server.rss()?;
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// Total instructions callgrind counted, from its output file.
pub fn callgrind_total(file: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no totals in {}", file.display())))
}
