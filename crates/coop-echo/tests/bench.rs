//! `coop-echo bench`: what it counts is exact, and a wrong prefix is named as such.

mod common;

use std::process::Output;

use common::{Server, bench, json_report};

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
