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

#[test]
fn a_run_second_by_second_as_json_lines_and_a_picture() {
    const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    // A seed whose draws reset some of the first 20 connections (opened one by one).
    let server = Server::start(&[
        "--quiet",
        "--fault",
        "reset-after=0@20%",
        "--fault-seed",
        "3",
    ]);
    let dir = std::env::temp_dir().join(format!("coop-echo-series-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (series, plot) = (dir.join("series.jsonl"), dir.join("run.png"));
    let font = std::path::Path::new(FONT).exists();
    if !font {
        common::skip_without("DejaVuSans.ttf", "apt-get install fonts-dejavu-core");
    }
    let mut args = vec!["-c", "20", "-d", "3", "--rate", "400", "--allow-errors"];
    args.extend(["--series", series.to_str().unwrap()]);
    if font {
        args.extend(["--plot", plot.to_str().unwrap()]);
    }
    let out = bench(&server, &args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&series).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    // Three seconds, and perhaps the part of one more that drained the last replies.
    assert!((3..=5).contains(&lines.len()), "{text}");
    assert_eq!(lines[0]["second"], 1);
    assert!(lines[1]["messages"].as_u64().unwrap() > 0, "{text}");
    assert!(lines[1]["p99_us"].as_f64().unwrap() > 0.0, "{text}");
    let resets: u64 = lines
        .iter()
        .map(|l| l["errors"]["reset"].as_u64().unwrap())
        .sum();
    assert!(resets > 0, "{text}");
    if font {
        let png = std::fs::read(&plot).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
        assert!(png.len() > 10_000, "{} bytes: an empty picture?", png.len());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// In open loop a connection may wait for its next send longer than `--stall-timeout`:
/// that is not a stall (nothing is owed to it).
#[test]
fn a_slow_schedule_is_not_a_stall() {
    let server = Server::start(&["--quiet"]);
    let out = bench(
        &server,
        &[
            "-c",
            "2",
            "--rate",
            "1",
            "-d",
            "3",
            "--stall-timeout",
            "1",
            "--json",
        ],
    );
    let report = json_report(&out);
    assert_eq!(count(&report, "stalled"), 0, "{report}");
    assert!(report["messages"].as_u64().unwrap() >= 2, "{report}");
}

/// A server that closes (FIN) mid-run is "closed early", whether the client finds out
/// by a read (EOF) or by a write (EPIPE), never "reset".
#[test]
fn a_close_is_not_a_reset() {
    let server = Server::start(&["--quiet", "--fault", "close-after=200"]);
    let out = bench(
        &server,
        &[
            "-c",
            "20",
            "--pipeline",
            "8",
            "-d",
            "2",
            "--json",
            "--allow-errors",
        ],
    );
    let report = json_report(&out);
    assert_eq!(count(&report, "reset"), 0, "{report}");
    assert_eq!(count(&report, "closed"), 20, "{report}");
}
