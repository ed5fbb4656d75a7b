//! `coop-echo client`: every way of naming the server reaches it.

mod common;

use std::process::Output;

use common::Server;

/// Runs `coop-echo client ARGS` with `input` on stdin, bounded in time.
fn client(args: &[&str], input: &[u8]) -> Output {
    common::run(&[&["client"], args].concat(), input)
}

fn assert_hello(args: &[&str]) {
    let out = client(args, b"Hello\n");
    assert_eq!(
        (out.status.code(), String::from_utf8_lossy(&out.stdout)),
        (Some(0), "GOT:Hello\n".into()),
        "client {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A name, with the port after a colon or apart.
#[test]
fn a_host_name_with_its_port_in_either_form() {
    let server = Server::start(&["--quiet"]);
    let port = server.addr.port().to_string();
    assert_hello(&[&format!("localhost:{port}")]);
    assert_hello(&["localhost", &port]);
    assert_hello(&[&format!("127.0.0.1:{port}")]);
}

/// An IPv6 literal, in brackets with its port, or bare with the port apart.
#[test]
fn an_ipv6_literal_in_brackets_or_bare() {
    if !common::need_ipv6_loopback() {
        return;
    }
    let server = Server::start_on("::1", &["--quiet"]);
    let port = server.addr.port().to_string();
    assert_hello(&[&format!("[::1]:{port}")]);
    assert_hello(&["::1", &port]);
    assert_hello(&["[::1]", &port]);
}

/// A port given twice, or a HOST:PORT that is neither, is a usage error (exit 2).
#[test]
fn an_address_that_means_nothing_is_a_usage_error() {
    for args in [
        &["localhost:7", "8"][..],
        &["localhost:http"],
        &["[::1]:7", "8"],
    ] {
        let out = client(args, b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}

/// `client --help` shows both forms.
#[test]
fn the_help_shows_both_forms() {
    let out = common::run(&["client", "--help"], b"");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("[HOST[:PORT]] [PORT]"), "{help}");
    assert!(help.contains("localhost:25000"), "{help}");
    assert!(help.contains("localhost 25000"), "{help}");
}
