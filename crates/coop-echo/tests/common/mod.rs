//! Runs the real `coop-echo` binary on a free loopback port, and talks to it.
#![allow(dead_code)] // each test file uses its own part of this

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long any single socket operation of a test may wait before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_coop-echo")
}

/// A running server, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `coop-echo serve --host 127.0.0.1 --port 0 ARGS` and waits for its
    /// `Listening on` line.
    pub fn start(args: &[&str]) -> Server {
        let mut child = Command::new(binary())
            .args(["serve", "--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coop-echo");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some((_, addr)) = line.split_once("Listening on ") {
                    let _ = addr_tx.send(addr.trim().to_string());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(IO_TIMEOUT) {
            Ok(addr) => addr.parse().expect("a socket address after 'Listening on'"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "coop-echo did not say 'Listening on'; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Server { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connected client with bounded reads and writes.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to coop-echo");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends `payload`, then reads until `expected_len` bytes came back.
pub fn round_trip(stream: &mut TcpStream, payload: &[u8], expected_len: usize) -> Vec<u8> {
    stream.write_all(payload).unwrap();
    let mut reply = vec![0; expected_len];
    stream.read_exact(&mut reply).unwrap();
    reply
}

/// Writes `payload` from a second thread while this one reads, then half-closes and reads
/// to EOF: what a client that streams through the server sees.
pub fn stream_through(server: &Server, payload: Arc<Vec<u8>>) -> Vec<u8> {
    let mut stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        for piece in payload.chunks(64 * 1024) {
            writer.write_all(piece).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    sender.join().unwrap();
    reply
}

/// Deterministic bytes (xorshift), for payloads that must not repeat.
pub fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    seed |= 1;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// The reply `--framing line` gives: `prefix` before every line.
pub fn prefix_lines(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() * 2);
    let mut line_start = true;
    for &b in payload {
        if line_start {
            out.extend_from_slice(prefix);
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}
