//! Signals as something to await, and what a signal does once nobody awaits it any more.
//! Each test runs its signals in a child process (this test binary again, with one test
//! named and an environment variable set): a signal's disposition is the process's.

#![cfg(not(miri))]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use common::{LIMIT, bounded};
use coop::signal::{SIGINT, SIGTERM, Signals};

/// Set in the child: which test's child part to run.
const CHILD: &str = "COOP_SIGNAL_TEST_CHILD";

/// Runs test `name` again in a child process with `CHILD` set, and returns how it ended.
fn run_child(name: &'static str) -> std::process::ExitStatus {
    bounded(LIMIT, move || {
        let exe = std::env::current_exe().expect("the test binary's path");
        Command::new(exe)
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .expect("run the child")
    })
}

fn in_child(name: &str) -> bool {
    std::env::var_os(CHILD).is_some_and(|v| v == name)
}

/// Raises `signal` on this thread: its handler has run (or the process is gone) when
/// this returns. (`kill` of the process would let another thread take it, later.)
fn raise(signal: i32) {
    signal_hook::low_level::raise(signal).expect("raise");
}

/// Caught while a `Signals` holds it; caught again by a second one made after the first
/// was dropped; and once the last is dropped, SIGTERM ends the process as it would have
/// with no `Signals` ever made.
#[test]
fn a_signal_takes_its_default_action_again_once_its_last_signals_is_dropped() {
    const NAME: &str = "a_signal_takes_its_default_action_again_once_its_last_signals_is_dropped";
    if in_child(NAME) {
        coop::block_on(async {
            for _ in 0..2 {
                let signals = Signals::new(&[SIGTERM]).unwrap();
                raise(SIGTERM);
                assert_eq!(signals.recv().await.unwrap(), SIGTERM);
            }
        });
        raise(SIGTERM);
        // Not reached when SIGTERM does what it should; bounded if it does not.
        std::process::exit(3);
    }
    let status = run_child(NAME);
    assert_eq!(
        status.signal(),
        Some(SIGTERM),
        "the child should die of SIGTERM once its Signals are dropped: {status}"
    );
}

/// Two `Signals` for one signal: dropping one leaves the signal caught for the other.
#[test]
fn a_signal_stays_caught_while_any_signals_holds_it() {
    const NAME: &str = "a_signal_stays_caught_while_any_signals_holds_it";
    if in_child(NAME) {
        coop::block_on(async {
            let kept = Signals::new(&[SIGINT, SIGTERM]).unwrap();
            drop(Signals::new(&[SIGTERM]).unwrap());
            raise(SIGTERM);
            assert_eq!(kept.recv().await.unwrap(), SIGTERM);
        });
        std::process::exit(0);
    }
    let status = run_child(NAME);
    assert_eq!(status.code(), Some(0), "{status}");
}

/// `ctrl_c` completes on SIGINT; afterwards SIGINT ends the process again.
#[test]
fn ctrl_c_completes_on_sigint_and_lets_go_of_it() {
    const NAME: &str = "ctrl_c_completes_on_sigint_and_lets_go_of_it";
    if in_child(NAME) {
        coop::block_on(async {
            let waiting = coop::spawn(coop::signal::ctrl_c());
            coop::yield_now().await; // it holds SIGINT now
            raise(SIGINT);
            waiting.await.unwrap().unwrap();
        });
        raise(SIGINT);
        std::process::exit(3);
    }
    let status = run_child(NAME);
    assert_eq!(status.signal(), Some(SIGINT), "{status}");
}
