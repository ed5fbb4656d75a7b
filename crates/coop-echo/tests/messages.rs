//! What the server says when it stops: counts in the singular when there is one, and a
//! closing line for every connection, those closed at the deadline included.

mod common;

use std::time::Duration;

use common::{IO_TIMEOUT, Server, round_trip};

/// A connection still open at the deadline (`--shutdown-timeout 0`) gets its own
/// `Connection closed` line, before the summary that counts it.
#[test]
fn a_connection_closed_at_the_deadline_has_its_line_then_the_summary() {
    let mut server = Server::start(&["--shutdown-timeout", "0"]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"hi\n", 7), b"GOT:hi\n");
    let peer = client.local_addr().unwrap();
    server.signal("TERM");
    assert_eq!(server.wait_exit(IO_TIMEOUT).code(), Some(0));
    let summary = server.wait_for_log("Stopped: ");
    assert!(
        summary.ends_with(
            "Stopped: 1 connection served, 3 bytes in, 7 bytes out; 1 connection closed at the deadline"
        ),
        "{summary}"
    );
    server.wait_for_log(
        "SIGTERM: stopped accepting; waiting up to 0 s for 1 open connection to finish",
    );
    let log = server.log();
    let closed = format!("Connection closed {peer}: the server stopped (3 bytes in, 7 bytes out)");
    let at = log
        .find(&closed)
        .unwrap_or_else(|| panic!("no '{closed}' in:\n{log}"));
    assert!(at < log.find("Stopped: ").unwrap(), "{log}");
}

/// Nothing open: no wait to announce, and a summary in the plural of zero.
#[test]
fn a_stop_with_nothing_open_says_so() {
    let mut server = Server::start(&[]);
    server.signal("INT");
    assert_eq!(server.wait_exit(IO_TIMEOUT).code(), Some(0));
    server.wait_for_log("SIGINT: stopped accepting; no connection open");
    server.wait_for_log("Stopped: 0 connections served, 0 bytes in, 0 bytes out");
    assert!(!server.log().contains("closed at the deadline"));
}

/// A second signal: the connection still open gets its line too, and the exit is 130.
#[test]
fn a_second_signal_closes_what_is_open_with_its_line() {
    let mut server = Server::start(&["--shutdown-timeout", "60"]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"hi\n", 7), b"GOT:hi\n");
    let peer = client.local_addr().unwrap();
    server.signal("INT");
    server.wait_for_log("stopped accepting");
    server.signal("INT");
    assert_eq!(server.wait_exit(Duration::from_secs(5)).code(), Some(130));
    server.wait_for_log("SIGINT: exiting at once");
    server.wait_for_log(&format!("Connection closed {peer}: the server stopped"));
}

/// `--max-connections 0` is refused in one clear sentence.
#[test]
fn max_connections_zero_says_what_is_allowed() {
    let out = common::run(&["--max-connections", "0"], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "error: invalid value '0' for '--max-connections <N>': give 1 or more connections, \
         or auto (as many as the fd limit allows)"
    );
}
