//! What every test file needs: a time limit that fails instead of hanging, and a
//! connected pair of sockets.

#![allow(dead_code)]

use std::io;
use std::panic::resume_unwind;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use coop::net::{TcpListener, TcpStream};

/// Generous: only a hang reaches it.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Runs `body` on a thread of its own and returns what it returns; fails the test if it
/// takes longer than `limit` (a hang is a failure, not a stuck run), and passes its
/// panic on.
pub fn bounded<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    let thread = thread::spawn(move || {
        let _ = done.send(body());
    });
    match result.recv_timeout(limit) {
        Ok(value) => {
            let _ = thread.join();
            value
        }
        Err(RecvTimeoutError::Timeout) => panic!("the test did not finish within {limit:?}"),
        Err(RecvTimeoutError::Disconnected) => match thread.join() {
            Err(panic) => resume_unwind(panic),
            Ok(()) => unreachable!("the body returned without sending"),
        },
    }
}

/// A connected pair on loopback, both ends coop sockets: `(client, server)`.
pub async fn pair() -> io::Result<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?).await?;
    let (server, _) = listener.accept().await?;
    Ok((client, server))
}

/// The binary of coop's example `name`, built (or brought up to date) by the same cargo
/// that runs the test: `cargo test` builds examples, but `cargo test --test NAME` does
/// not.
pub fn example(name: &str) -> std::path::PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .expect("the test runs from target/PROFILE/deps");
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--quiet", "-p", "coop", "--example", name]);
    if profile_dir.file_name().is_some_and(|dir| dir == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example {name}");
    profile_dir.join("examples").join(name)
}

/// A coop example running as a server, killed when dropped, however the test ends.
pub struct Example {
    child: std::process::Child,
    /// Where it listens, from its first line, `Listening on ADDR`.
    pub addr: std::net::SocketAddr,
}

impl Example {
    /// Starts example `name` with `args`, and reads its `Listening on ADDR` line.
    pub fn start(name: &str, args: &[&str]) -> Example {
        use std::io::BufRead;
        let mut child = std::process::Command::new(example(name))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = child.stdout.take().expect("its stdout");
        let mut first = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut first);
        let addr = read
            .ok()
            .and_then(|_| first.trim().strip_prefix("Listening on ")?.parse().ok());
        match addr {
            Some(addr) => Example { child, addr },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name}'s first line is not `Listening on ADDR`: {first:?}")
            }
        }
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
