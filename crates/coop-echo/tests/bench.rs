//! `coop-echo bench`: what it counts is exact, a wrong prefix is named as such, and a run
//! with errors fails.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::thread;

use common::{IO_TIMEOUT, Server, bench, json_report};

/// The `messages` of a `--json` report.
fn messages(out: &Output) -> u64 {
    json_report(out)["messages"].as_u64().expect("messages")
}

/// Against a plain echo (`serve --prefix ''`), bench with its default prefix fails on
/// the first reply, says to give `--prefix`, and shows no per-message figure of nothing.
#[test]
fn a_plain_echo_without_prefix_fails_naming_prefix() {
    let server = Server::start(&["--quiet", "--prefix", ""]);
    let out = bench(&server, &["-c", "1", "-n", "10"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("--prefix ('' for a plain echo)")),
        "{stderr}"
    );
    assert!(stdout.contains("messages   0 "), "{stdout}");
    assert!(!stdout.contains("µs/msg"), "{stdout}");
    assert!(!stdout.contains("latency"), "{stdout}");

    // Told, it verifies every reply.
    let out = bench(&server, &["-c", "1", "-n", "10", "--prefix", "", "--json"]);
    assert_eq!(messages(&out), 10);
}

/// Open loop for a duration sends exactly rate × duration messages, for a rate whose
/// period is no whole number of nanoseconds (1/3,000 s); so does a counted run.
#[test]
fn open_loop_sends_exactly_rate_times_duration() {
    let server = Server::start(&["--quiet"]);
    let runs: [(&[&str], u64); 4] = [
        (&["-c", "4", "--rate", "3000", "-d", "0.5"], 1500),
        (&["-c", "3", "--rate", "1000", "-d", "0.2"], 200),
        (&["-c", "2", "--rate", "2000", "-n", "300"], 300),
        (&["-c", "2", "--pipeline", "4", "-n", "301"], 301),
    ];
    for (args, expected) in runs {
        let out = bench(&server, &[args, &["--json"]].concat());
        assert_eq!(messages(&out), expected, "{args:?}");
    }
}

/// A server that answers each connection's first message and then closes it: every
/// connection ends in an error, and bench says so in its exit status (it exited 0), after
/// its report. A real server's run exits 0 (the tests above).
#[test]
fn connections_that_fail_make_a_failed_run() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    const CONNECTIONS: usize = 3;
    let answering = thread::spawn(move || {
        for _ in 0..CONNECTIONS {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let mut message = Vec::new();
            let mut buf = [0; 256];
            while !message.contains(&b'\n') {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "bench closed before its first message");
                message.extend_from_slice(&buf[..n]);
            }
            stream.write_all(b"GOT:").unwrap();
            stream.write_all(&message).unwrap();
        }
    });
    let args = ["bench", "--host", "127.0.0.1", "--port", &port, "-q"];
    let out = common::run(&[&args[..], &["-c", "3", "-n", "1000"]].concat(), b"");
    answering.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("messages   3 "), "{stdout}");
    assert!(stdout.contains("errors     3 "), "{stdout}");
    assert!(stderr.starts_with("coop-echo: bench failed: "), "{stderr}");

    let help = common::run(&["bench", "--help"], b"");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("1, after the report, when anything"),
        "{help}"
    );
}
