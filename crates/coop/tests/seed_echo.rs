//! The `seed_echo` example, as a newcomer runs it: beside a server that already has the
//! port, it says so in one line and exits non-zero.

// Sockets (and /proc) all through: Miri has neither.
#![cfg(not(miri))]

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs the example with `args`, bounded in time.
fn run(args: &[&str]) -> Output {
    let child = Command::new(common::example("seed_echo"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start seed_echo");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(Duration::from_secs(20))
        .expect("seed_echo exits")
        .expect("seed_echo's output")
}

#[test]
fn a_taken_port_gets_one_line_naming_the_address_and_the_reason() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let out = run(&[&address]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.starts_with(&format!("seed_echo: cannot listen on {address}: ")),
        "{stderr}"
    );
    assert!(stderr.contains("in use"), "{stderr}");
    assert!(out.stdout.is_empty(), "no Listening line");
}
