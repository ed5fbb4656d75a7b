//! The `seed_echo` example, as a newcomer runs it: beside a server that already has the
//! port, it says so in one line and exits non-zero.

// Sockets (and /proc) all through: Miri has neither.
#![cfg(not(miri))]

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The example's binary, built (or brought up to date) by the same cargo that runs this
/// test: `cargo test` builds examples, but `cargo test --test seed_echo` does not.
fn seed_echo() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let profile_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .expect("the test runs from target/PROFILE/deps");
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "coop", "--example", "seed_echo"]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(status.success(), "cargo build --example seed_echo");
    profile_dir.join("examples").join("seed_echo")
}

/// Runs the example with `args`, bounded in time.
fn run(args: &[&str]) -> Output {
    let child = Command::new(seed_echo())
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

#[test]
fn help_says_it_takes_an_address() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("usage: seed_echo [ADDRESS]"), "{help}");
    assert!(help.contains("HOST:PORT"), "{help}");
}
