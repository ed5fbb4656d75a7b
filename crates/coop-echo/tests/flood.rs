//! Clients that connect and fail at once, by the thousand, must not flood the log: a
//! few warnings in full, then a summary line now and then that counts the rest, and the
//! full count in `/metrics`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;

use common::certs::Certs;
use common::{IO_TIMEOUT, Server, http, metric};

/// Failing clients of each test.
const CLIENTS: usize = 5000;

/// Client threads: enough to keep a server thread busy, few enough for 2 cores.
const THREADS: usize = 4;

/// Warning lines allowed for a flood: the few in full, then one summary per interval on
/// each serving thread, and one at the stop. Many times what a run of a few seconds
/// needs, and two orders of magnitude under one per client.
const MAX_WARNINGS: usize = 40;

/// `clients` clients, `THREADS` at a time, each connecting to `addr`, sending `bytes`,
/// and reading until the server closes the connection (a TLS server sends an alert
/// first).
fn fail_many(addr: SocketAddr, clients: usize, bytes: &'static [u8]) {
    let each = clients / THREADS;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..each {
                    let mut stream = TcpStream::connect(addr).expect("connect");
                    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    stream.write_all(bytes).unwrap();
                    let _ = stream.shutdown(Shutdown::Write);
                    match stream.read_to_end(&mut Vec::new()) {
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
                        Err(e) => panic!("reading until the server closes: {e}"),
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("a client thread");
    }
}

/// The warning lines of `log`, and how many failures they account for: one each for
/// those in full (that contain `full`), N for each summary (`summary: N more in ...`).
fn accounted(log: &str, full: &str, summary: &str) -> (usize, u64) {
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ")).collect();
    let mut count = 0;
    for line in &warnings {
        // A summary names its last failure too: looked for first.
        if let Some((_, rest)) = line.split_once(&format!("{summary}: ")) {
            let (more, _) = rest
                .split_once(" more in the last ")
                .unwrap_or_else(|| panic!("a summary line without its count: {line}"));
            count += more.parse::<u64>().expect("a count of more failures");
        } else if line.contains(full) {
            count += 1;
        }
    }
    (warnings.len(), count)
}

/// Stops `server` with SIGTERM and returns its log, once it has exited 0 and its last
/// line (the summary of the stop) has been read.
fn stopped(mut server: Server) -> String {
    server.signal("TERM");
    assert!(server.wait_exit(IO_TIMEOUT).success(), "{}", server.log());
    // The log is read by a thread of its own, which may be behind the exit.
    server.wait_until("the stop's summary", |log| log.contains(" Stopped: "))
}

/// Plain text on a `--proxy-protocol` port, from 5,000 clients: a few lines, and a
/// summary that names the rest. (Before: 5,000 warning lines, one per client, `--quiet`
/// or not.)
#[test]
fn refused_proxy_headers_are_summarised() {
    let server = Server::start(&["--proxy-protocol", "--quiet"]);
    fail_many(server.addr, CLIENTS, b"Hello\n");
    let log = stopped(server);
    let (lines, count) = accounted(
        &log,
        "refused: no PROXY header",
        "Connections refused for their PROXY header",
    );
    eprintln!("{CLIENTS} refused clients: {lines} warning lines");
    assert!(lines <= MAX_WARNINGS, "{lines} warning lines:\n{log}");
    assert_eq!(count, CLIENTS as u64, "{log}");
    let summary = log
        .lines()
        .find(|l| l.contains("Connections refused for their PROXY header: "))
        .unwrap_or_else(|| panic!("no summary line:\n{log}"));
    assert!(
        summary.contains("from 1 client (last: 127.0.0.1:"),
        "{summary}"
    );
    assert!(summary.ends_with(": no PROXY header)"), "{summary}");
}

/// Plain text on an HTTPS listener (`--http` with `--tls-cert`), from 5,000 clients.
#[test]
fn https_handshake_failures_are_summarised() {
    let certs = Certs::new();
    let server = certs.serve(&["--http", "0", "--quiet"]);
    let https = server.http_addr();
    fail_many(https, CLIENTS, b"GET / HTTP/1.1\r\n\r\n");
    let log = stopped(server);
    let (lines, count) = accounted(&log, "does not speak TLS", "TLS handshake failures");
    eprintln!("{CLIENTS} plain clients of HTTPS: {lines} warning lines");
    assert!(lines <= MAX_WARNINGS, "{lines} warning lines:\n{log}");
    assert_eq!(count, CLIENTS as u64, "{log}");
}

/// Plain text on the TLS port, from 5,000 clients.
#[test]
fn tls_handshake_failures_are_summarised() {
    let certs = Certs::new();
    let server = certs.serve(&["--quiet"]);
    fail_many(server.addr, CLIENTS, b"Hello\n");
    let log = stopped(server);
    let (lines, count) = accounted(&log, "does not speak TLS", "TLS handshake failures");
    eprintln!("{CLIENTS} plain clients of TLS: {lines} warning lines");
    assert!(lines <= MAX_WARNINGS, "{lines} warning lines:\n{log}");
    assert_eq!(count, CLIENTS as u64, "{log}");
}

/// What the log summarises, `/metrics` counts in full, on each thread and in all.
#[test]
fn the_metrics_count_every_refusal() {
    let server = Server::start(&[
        "--proxy-protocol",
        "--quiet",
        "--threads",
        "2",
        "--admin",
        "0",
    ]);
    fail_many(server.addr, CLIENTS, b"Hello\n");
    let (status, body) = http(
        server.admin_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(status.contains("200"), "{status}");
    let all: u64 = metric(&body, "echo_refused_total{reason=\"proxy_header\"}");
    assert_eq!(all, CLIENTS as u64, "{body}");
    let by_thread: u64 = (0..2)
        .map(|thread| {
            metric::<u64>(
                &body,
                &format!(
                    "echo_refused_by_thread_total{{thread=\"{thread}\",reason=\"proxy_header\"}}"
                ),
            )
        })
        .sum();
    assert_eq!(by_thread, CLIENTS as u64, "{body}");
    let none: u64 = metric(&body, "echo_refused_total{reason=\"tls_handshake\"}");
    assert_eq!(none, 0);
}
