//! `bench/compare.sh` answers `--help`, and a mistyped argument, before it installs or
//! builds anything: `--help` started the half-hour run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs the script with an empty `PATH`: it can read its arguments and print its usage
/// with bash's builtins alone, and had it gone on to install or build, it would fail for
/// want of the tools (with neither status 0 nor 2).
fn compare_sh(args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../compare.sh");
    Command::new(bash())
        .arg(script)
        .args(args)
        .env("PATH", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .expect("run bash")
}

fn bash() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("bash"))
        .find(|bash| bash.is_file())
        .expect("bash on PATH")
}

const FIRST_LINE: &str =
    "Side-by-side benchmark: coop-echo, a tokio echo server and a bare epoll loop.\n";

#[test]
fn help_prints_the_usage_and_nothing_else() {
    for flag in ["--help", "-h"] {
        let out = compare_sh(&["--quick", flag]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{flag}: {stderr}");
        assert!(stdout.starts_with(FIRST_LINE), "{flag}: {stdout}");
        assert!(stdout.contains("bench/compare.sh --quick"), "{stdout}");
        assert!(stdout.contains("installs what is missing"), "{stdout}");
        assert!(!stdout.lines().any(|l| l.starts_with('#')), "{stdout}");
        assert_eq!(stderr, "", "{flag}");
    }
}

#[test]
fn an_unknown_argument_is_a_usage_error() {
    for (args, why) in [
        (&["--bogus"][..], "unknown argument '--bogus'"),
        (&["--quick", "quick"], "unknown argument 'quick'"),
        (&["coop"], "'coop' goes after --instructions"),
        (&["--instructions", "hyper"], "unknown argument 'hyper'"),
    ] {
        let out = compare_sh(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            stderr.starts_with(&format!("compare.sh: {why}\n{FIRST_LINE}")),
            "{args:?}: {stderr}"
        );
    }
}
