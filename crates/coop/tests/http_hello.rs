//! The `http_hello` example (hyper 1.x on coop), fetched with a real client, curl: the
//! status and the body, and 200 requests over one keep-alive connection.
#![cfg(not(miri))]

mod common;

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs curl with `args`, bounded in time.
fn curl(args: &[String]) -> Output {
    let child = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("curl: {e} (apt-get install curl)"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    rx.recv_timeout(Duration::from_secs(30))
        .expect("curl exits")
        .expect("curl's output")
}

#[test]
fn curl_gets_200_and_the_body_200_times_over_keep_alive() {
    let example = common::Example::start("http_hello", &["127.0.0.1:0"]);
    let addr = example.addr;
    let url = format!("http://{addr}/");

    let one = curl(&["--include".into(), url.clone()]);
    assert!(one.status.success(), "{one:?}");
    let response = String::from_utf8_lossy(&one.stdout);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with("\r\n\r\nHello from coop!\n"),
        "{response}"
    );

    // 200 URLs in one curl: one connection, kept alive. After each body, curl writes
    // the status and the new connections that request took (0 when it reused one).
    let mut args = vec![
        "--write-out".to_string(),
        "\\nstatus %{http_code} %{num_connects}\\n".into(),
    ];
    args.extend(std::iter::repeat_n(url, 200));
    let many = curl(&args);
    assert!(many.status.success(), "{many:?}");
    let out = String::from_utf8_lossy(&many.stdout);
    assert_eq!(out.matches("Hello from coop!\n").count(), 200, "{out}");
    let lines: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("status "))
        .collect();
    assert_eq!(lines.len(), 200);
    assert!(lines.iter().all(|l| l.starts_with("200 ")), "{lines:?}");
    let connects: u32 = lines
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap().parse::<u32>().unwrap())
        .sum();
    assert_eq!(
        connects, 1,
        "every request after the first reused the connection"
    );
}
