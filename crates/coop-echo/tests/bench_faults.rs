//! `coop-echo bench` against a server that misbehaves on purpose (`--fault`): it tells
//! the faults apart, counts each, verifies every reply of the connections answered, and
//! fails the run unless `--allow-errors`.

mod common;

use common::{Server, bench, json_report};

fn count(report: &serde_json::Value, kind: &str) -> u64 {
    report["faults"][kind].as_u64().unwrap()
}

#[test]
fn resets_are_counted_and_the_answered_replies_verified() {
    let server = Server::start(&[
        "--quiet",
        "--fault",
        "reset-after=0@20%",
        "--fault-seed",
        "3",
    ]);
    let out = bench(&server, &["-c", "200", "-n", "4000", "--json"]);
    assert_eq!(out.status.code(), Some(1), "faults fail the run");
    let out = bench(
        &server,
        &["-c", "200", "-n", "4000", "--json", "--allow-errors"],
    );
    let report = json_report(&out);
    let reset = count(&report, "reset");
    // The binomial's 99.9% bounds for 200 draws at 20%: 40 ± 3.29 × 5.66.
    assert!((21..=59).contains(&reset), "{reset} of 200 reset: {report}");
    assert_eq!(report["mismatches"], 0);
    assert_eq!(count(&report, "closed") + count(&report, "stalled"), 0);
    assert!(report["messages"].as_u64().unwrap() > 0);
    assert!(report["connect_us"]["p50"].as_f64().unwrap() > 0.0);
    assert!(report["first_reply_us"]["p99"].as_f64().unwrap() > 0.0);
}

#[test]
fn closed_stalled_and_late_are_told_apart() {
    let server = Server::start(&[
        "--quiet",
        "--fault",
        "close-after=640@30%",
        "--fault",
        "stall-after=640@30%",
        "--fault",
        "delay=30ms@50%",
        "--fault-seed",
        "5",
    ]);
    let out = bench(
        &server,
        &[
            "-c",
            "40",
            "-d",
            "3",
            "--stall-timeout",
            "1",
            "--slo",
            "20ms",
            "--json",
            "--allow-errors",
        ],
    );
    let report = json_report(&out);
    assert!(count(&report, "closed") > 0, "{report}");
    assert!(count(&report, "stalled") > 0, "{report}");
    assert!(count(&report, "late") > 0, "{report}");
    assert_eq!(count(&report, "reset"), 0, "{report}");
    assert_eq!(report["mismatches"], 0);
}
