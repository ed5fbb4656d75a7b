//! Test 10: the command line's answers to good and bad input.

mod common;

use std::net::TcpListener;
use std::process::Output;

/// Runs the program, bounded in time: a bad argument that slipped through would start
/// a server that never returns.
fn run(args: &[&str]) -> Output {
    common::run(args, b"")
}

#[test]
fn help_exits_zero() {
    for args in [&["--help"][..], &["serve", "--help"], &["--version"]] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
    let help = String::from_utf8(run(&["--help"]).stdout).unwrap();
    for flag in ["--host", "--port", "--prefix", "--framing", "--quiet"] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
}

#[test]
fn bad_arguments_exit_two_with_clap_s_message() {
    for args in [
        &["--bogus"][..],
        &["--port", "70000"],
        &["--port", "http"],
        &["--framing", "word"],
        &["serve", "--port"],
        &["--idle-timeout", "-1"],
        &["--idle-timeout", "abc"],
        &["--stats", "0.01"],
        &["--udp-rate", "10"],
        &["--admin", "nowhere"],
        // Metrics beyond this machine need saying so; nothing is bound before the refusal.
        &["--host", "127.0.0.1", "--port", "0", "--admin", "0.0.0.0:0"],
        // ... and a loopback one cannot reach beyond it, whatever the flag says.
        &[
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--admin",
            "0",
            "--admin-public",
        ],
        &["client", "localhost", "99999"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}

/// A host that does not resolve is a failure to listen, as a taken port is (README,
/// "Errors"): one line, exit 1. An empty name, so that no resolver is asked anything.
#[test]
fn a_host_that_does_not_resolve_exits_one_in_one_line() {
    let out = run(&["--host", "", "--port", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("coop-echo: cannot listen on "),
        "{stderr}"
    );
}

/// An error found after parsing is told with the usage of the command it was given to,
/// as clap's own are (found by a newcomer: `client` errors showed the program's usage).
#[test]
fn a_late_error_shows_its_own_command_s_usage() {
    for (args, usage) in [
        (&["client", "127.0.0.1:abc"][..], "Usage: coop-echo client "),
        (
            &["serve", "--host", "127.0.0.1", "--admin", "0.0.0.0:0"],
            "Usage: coop-echo serve ",
        ),
        (
            &["--host", "127.0.0.1", "--admin", "0.0.0.0:0"],
            "Usage: coop-echo [OPTIONS]",
        ),
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(usage), "{args:?}: {stderr}");
    }
}

#[test]
fn a_taken_port_exits_one_naming_the_address_and_the_reason() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = run(&["--host", "127.0.0.1", "--port", &port.to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(lines[0].contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(lines[0].contains("in use"), "{stderr}");
}

/// The help speaks to someone who has not read the README, and in one voice: every
/// default shown by clap in the same place, the same value name for the same kind of
/// value in every command.
#[test]
fn the_help_is_consistent() {
    let help = |args: &[&str]| String::from_utf8(run(args).stdout).unwrap();
    let top = help(&["--help"]);
    // The tutorial's word; --fault-seed is the flag's name, not that word.
    assert!(
        !top.replace("--fault-seed", "").contains("seed"),
        "README words in the help: {top}"
    );
    let host = top
        .split("--host <HOST>")
        .nth(1)
        .and_then(|rest| rest.split("--port").next())
        .unwrap();
    assert!(host.contains("IPv6"), "{host}");

    for args in [&["--help"][..], &["serve", "--help"], &["bench", "--help"]] {
        let text = help(args);
        for line in text.lines().filter(|l| l.contains("[default:")) {
            assert!(
                line.trim_start().starts_with("[default:"),
                "{args:?}: a default inline, where the others have a line of their own: {line}"
            );
        }
        for name in [
            "<DURATION>",
            "<CONNECTIONS>",
            "<REQUESTS>",
            "<PIPELINE>",
            "<SIZE>",
            "<STALL_TIMEOUT>",
            "<SERVER_PID>",
            "<RATE>",
        ] {
            assert!(!text.contains(name), "{args:?} names a value {name}");
        }
    }
    let bench = help(&["bench", "--help"]);
    assert!(bench.contains("--duration <SECS>"), "{bench}");
    assert!(bench.contains("--connections <N>"), "{bench}");
    let serve = help(&["serve", "--help"]);
    assert!(serve.contains("--max-connections <N>"), "{serve}");
    assert!(serve.contains("[default: auto]"), "{serve}");
}

/// A `RUST_LOG` that is not a filter (a typo of a level, a bad level for a target) does
/// not silence the server: it logs at the default level, `info`, after one warning that
/// names the value. A good one is taken as it is, without a warning.
#[test]
fn a_bad_rust_log_falls_back_to_info_with_one_warning() {
    for bad in ["infoo", "coop_echo=loud", "info,debugg"] {
        let server = common::Server::start_with(&[], "127.0.0.1", 0, bad, &[]);
        let log = server.wait_for_log("Listening on");
        assert!(log.contains("INFO"), "{bad}: {log}");
        let log = server.log();
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{bad}: {log}");
        assert!(warnings[0].contains(&format!("RUST_LOG={bad:?}")), "{log}");
        assert!(!log.contains("DEBUG"), "{bad}: {log}");
    }
    for good in ["coop_echo=info", "debug", "info,hyper=warn", "coop"] {
        let server = common::Server::start_with(&[], "127.0.0.1", 0, good, &[]);
        server.wait_for_log("Listening on");
        assert!(!server.log().contains("WARN"), "{good}: {}", server.log());
    }
}
