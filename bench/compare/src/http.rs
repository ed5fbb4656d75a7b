//! The HTTP and WebSocket section: `coop-echo serve --http` against `bench/hyper-echo`
//! (the same hyper and tungstenite on tokio's current-thread runtime), each pinned to
//! core 0, the load on core 1, runs interleaved ([`crate::in_turn`]), medians:
//!
//! - HTTP/1.1 keep-alive: `wrk -t1 -c64` on `GET /echo` (the cheapest request: an empty
//!   body back), requests a second and the server's CPU per request;
//! - WebSocket: `ws-load`, 100 connections sending 64-byte binary messages at a fixed
//!   rate both servers keep up with, every echo checked; the server's CPU per message;
//! - idle memory: the server's resident memory per connection with `plan.many` idle
//!   WebSocket connections (each has echoed one message), and, on another fresh server,
//!   as many idle HTTP/1.1 keep-alive connections (each has had one `/echo` answered).
//!
//! Each of the three parts starts its server afresh, so that what a part leaves in the
//! allocator does not count in the next one's memory.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::peer::{Kind, Server};
use crate::results::Samples;
use crate::{Plan, number};

/// The servers compared, coop first.
const SERVERS: [Kind; 2] = [Kind::Coop, Kind::Hyper];

/// wrk's connections.
const WRK_CONNECTIONS: usize = 64;

/// The WebSocket load: connections, message size, messages a second in all.
const WS_CONNECTIONS: usize = 100;
const WS_SIZE: usize = 64;
const WS_RATE: u64 = 20_000;

/// Both servers let a connection go that has not sent a request head within 10 s
/// (coop-echo's `http::HEAD_TIME`, and hyper-echo's copy of it): the idle HTTP
/// connections must all be open, and measured, well within that.
const IDLE_HTTP_WITHIN: Duration = Duration::from_secs(8);

fn metric(name: &str) -> String {
    format!("http: {name}")
}

fn label(kind: Kind) -> &'static str {
    match kind {
        Kind::Coop => "coop-echo serve --http",
        _ => "hyper-echo",
    }
}

/// The section, `plan.runs` times, coop and hyper interleaved.
pub fn section(bin: &Path, plan: &Plan, samples: &mut Samples) -> io::Result<()> {
    for run in 1..=plan.runs {
        for kind in crate::in_turn(SERVERS, run) {
            eprintln!("http run {run}/{}: {}", plan.runs, label(kind));
            measure(kind, bin, plan, samples)?;
        }
    }
    Ok(())
}

fn measure(kind: Kind, bin: &Path, plan: &Plan, samples: &mut Samples) -> io::Result<()> {
    let mut add = |name: &str, value: f64| samples.add(kind, &metric(name), value);
    {
        let server = Server::start_http(kind, bin)?;
        let wrk = wrk(&server, plan.http_secs)?;
        add("rps", wrk.requests as f64 / wrk.seconds);
        add(
            "cpu_us_per_request",
            wrk.server_cpu_us / wrk.requests as f64,
        );
        add("wrk_p50_us", wrk.p50_us);
        add("wrk_p99_us", wrk.p99_us);
        add("wrk_errors", wrk.errors as f64);

        let report = ws_load(bin, &server, plan.http_secs)?;
        add("ws_cpu_us", number(&report, "server_cpu_us_per_msg")?);
        add("ws_msgs", number(&report, "messages_per_sec")?);
        add("ws_p50_us", number(&report["latency_us"], "p50")?);
        add("ws_p99_us", number(&report["latency_us"], "p99")?);
        let errors = ["errors", "mismatches", "lost", "connect_failures"]
            .iter()
            .map(|key| number(&report, key))
            .sum::<io::Result<f64>>()?;
        add("ws_errors", errors);
    }
    {
        let server = Server::start_http(kind, bin)?;
        let (before, per) = idle(&server, plan.many, open_websocket, None)?;
        add("idle_ws_kib", per);
        add("rss_before_kib", before);
    }
    {
        let server = Server::start_http(kind, bin)?;
        let (_, per) = idle(&server, plan.many, open_keep_alive, Some(IDLE_HTTP_WITHIN))?;
        add("idle_http_kib", per);
    }
    Ok(())
}

/// What one wrk run gives.
struct Wrk {
    requests: u64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    /// Non-2xx answers and socket errors.
    errors: u64,
    /// The server's CPU time over the run, µs.
    server_cpu_us: f64,
}

/// `wrk -t1 -c64 -d{secs}s --latency http://ADDR/echo` on core 1, and the server's CPU
/// time over it.
fn wrk(server: &Server, secs: u64) -> io::Result<Wrk> {
    let url = format!("http://{}/echo", server.addr);
    let start = cpu_time_of(server.pid())?;
    let out = Command::new("taskset")
        .args(["-c", "1", "wrk", "-t1"])
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{secs}s"))
        .args(["--latency", &url])
        .stderr(Stdio::inherit())
        .output()?;
    let cpu = cpu_time_of(server.pid())?.saturating_sub(start);
    let text = String::from_utf8_lossy(&out.stdout);
    let fail = || io::Error::other(format!("wrk gave no figures: {text}"));
    // `  123456 requests in 10.00s, 8.60MB read`
    let (requests, seconds) = text
        .lines()
        .find_map(|l| {
            let (n, rest) = l.trim().split_once(" requests in ")?;
            let secs = rest.split(',').next()?.trim().strip_suffix('s')?;
            Some((n.parse().ok()?, secs.parse().ok()?))
        })
        .ok_or_else(fail)?;
    // `     50%  312.00us` under `Latency Distribution`
    let percentile = |p: &str| {
        text.lines()
            .find_map(|l| duration_us(l.trim().strip_prefix(p)?.trim()))
            .ok_or_else(fail)
    };
    // `  Socket errors: connect 0, read 0, write 0, timeout 0`, `  Non-2xx or 3xx
    // responses: 5`: present only when not zero.
    let mut errors = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|e| e.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += n.trim().parse::<u64>().map_err(|_| fail())?;
        }
    }
    Ok(Wrk {
        requests,
        seconds,
        p50_us: percentile("50%")?,
        p99_us: percentile("99%")?,
        errors,
        server_cpu_us: cpu.as_secs_f64() * 1e6,
    })
}

/// `312.00us`, `1.20ms`, `2.00s` in µs.
fn duration_us(text: &str) -> Option<f64> {
    let (value, scale) = if let Some(v) = text.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = text.strip_suffix("ms") {
        (v, 1e3)
    } else if let Some(v) = text.strip_suffix('m') {
        (v, 60e6)
    } else {
        (text.strip_suffix('s')?, 1e6)
    };
    Some(value.parse::<f64>().ok()? * scale)
}

/// `ws-load` on core 1 against `server`: its JSON report.
fn ws_load(bin: &Path, server: &Server, secs: u64) -> io::Result<serde_json::Value> {
    let out = Command::new("taskset")
        .args(["-c", "1"])
        .arg(bin.join("ws-load"))
        .arg(server.addr.to_string())
        .args(["-c", &WS_CONNECTIONS.to_string()])
        .args(["-s", &WS_SIZE.to_string()])
        .args(["--rate", &WS_RATE.to_string()])
        .args(["-d", &secs.to_string()])
        .args(["--server-pid", &server.pid().to_string(), "--json"])
        .stderr(Stdio::inherit())
        .output()?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        io::Error::other(format!(
            "ws-load gave no report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// Opens one connection after another (after one to warm the server up), each brought
/// to its steady state by `open`, and returns the server's resident memory before them,
/// KiB, and what each adds to it while they sit idle, KiB. All must be open `within`
/// that long, if given.
fn idle(
    server: &Server,
    n: usize,
    open: fn(SocketAddr) -> io::Result<TcpStream>,
    within: Option<Duration>,
) -> io::Result<(f64, f64)> {
    drop(open(server.addr)?);
    std::thread::sleep(Duration::from_millis(100));
    let before = server.rss()?;
    let start = Instant::now();
    let held = (0..n)
        .map(|_| open(server.addr))
        .collect::<io::Result<Vec<_>>>()?;
    // What the server does after its last answer (hyper's next read, its timer) is
    // done by now.
    std::thread::sleep(Duration::from_millis(100));
    let after = server.rss()?;
    if let Some(within) = within
        && start.elapsed() > within
    {
        return Err(io::Error::other(format!(
            "{n} idle connections took {:.1} s to open, more than {} s: the servers' \
             request-head limit may have closed some",
            start.elapsed().as_secs_f64(),
            within.as_secs()
        )));
    }
    drop(held);
    let kib = |bytes: u64| bytes as f64 / 1024.0;
    Ok((kib(before), kib(after.saturating_sub(before)) / n as f64))
}

/// A connection that has had one `GET /echo` answered, kept alive.
fn open_keep_alive(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = connect(addr)?;
    stream.write_all(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
    let (head, mut rest) = read_head(&mut stream)?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(io::Error::other(format!("GET /echo answered {head:?}")));
    }
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    match length {
        Some(length) => {
            while rest.len() < length {
                rest.push(read_some(&mut stream)?);
            }
        }
        // Chunked: an empty body is its last chunk alone.
        None => {
            while !rest.ends_with(b"0\r\n\r\n") {
                rest.push(read_some(&mut stream)?);
            }
        }
    }
    Ok(stream)
}

/// A WebSocket connection that has echoed one binary message.
fn open_websocket(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = connect(addr)?;
    stream.write_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )?;
    let (head, rest) = read_head(&mut stream)?;
    if !head.starts_with("HTTP/1.1 101") || !rest.is_empty() {
        return Err(io::Error::other(format!("the upgrade answered {head:?}")));
    }
    // A masked binary frame of 8 bytes (RFC 6455 5.2), and its echo, unmasked.
    let payload = *b"idle-ws!";
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    stream.write_all(&frame)?;
    let mut echo = [0; 10];
    stream.read_exact(&mut echo)?;
    if echo[..2] != [0x82, payload.len() as u8] || echo[2..] != payload {
        return Err(io::Error::other(format!("the echo was {echo:?}")));
    }
    Ok(stream)
}

fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    Ok(stream)
}

/// Reads a response head: its text, and the bytes read past it.
fn read_head(stream: &mut TcpStream) -> io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let mut chunk = [0; 1024];
        match stream.read(&mut chunk)? {
            0 => return Err(io::Error::other("closed before a response head")),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn read_some(stream: &mut TcpStream) -> io::Result<u8> {
    let mut byte = [0];
    stream.read_exact(&mut byte)?;
    Ok(byte[0])
}

/// CPU time (user + system) of every thread of process `pid`, from the scheduler's own
/// nanosecond accounting, as `coop-echo bench --server-pid` and `ws-load` read it.
fn cpu_time_of(pid: u32) -> io::Result<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .map(Duration::from_nanos)
            .ok_or_else(|| io::Error::other(format!("no schedstat for {pid}")))?;
    }
    Ok(total)
}

/// The section's tables: each figure for both servers, and coop's over hyper's.
pub fn table(samples: &Samples, many: usize) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## HTTP and WebSocket\n\n\
         `coop-echo serve --http` (hyper 1 and async-tungstenite over tungstenite 0.30, on \
         coop) against `bench/hyper-echo`: the same hyper and tungstenite (by \
         tokio-tungstenite) on tokio's current-thread runtime, with the same answers and \
         settings (`/echo` streams the body back, a 10 s limit on a request head, a 4 KiB \
         WebSocket read buffer). Each server pinned to core 0, the load on core 1, runs \
         interleaved (coop first, then hyper first, and so on), medians; every sample is \
         below. Server CPU time is every thread's, from /proc's scheduler accounting; \
         each part starts its server afresh.\n"
    );
    let header = "| | coop-echo `serve --http` | hyper-echo (hyper on tokio) | coop / hyper |\n\
                  |---|---:|---:|---:|";
    let row = |md: &mut String, label: &str, name: &str, digits: usize| {
        let median = |kind| samples.median(kind, &metric(name));
        let fig = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
        let (c, h) = (median(Kind::Coop), median(Kind::Hyper));
        let ratio = match (c, h) {
            (Some(c), Some(h)) if h > 0.0 => format!("{:.2}", c / h),
            _ => "–".to_string(),
        };
        let _ = writeln!(md, "| {label} | {} | {} | {ratio} |", fig(c), fig(h));
    };
    let errors = |md: &mut String, label: &str, name: &str| {
        let sum = |kind| samples.sum(kind, &metric(name));
        let _ = writeln!(
            md,
            "| {label} | {:.0} | {:.0} | |",
            sum(Kind::Coop),
            sum(Kind::Hyper)
        );
    };

    let _ = writeln!(
        md,
        "### HTTP/1.1 keep-alive (wrk)\n\n\
         `wrk -t1 -c{WRK_CONNECTIONS} --latency http://ADDR/echo` (GET, an empty body \
         back): closed loop.\n\n{header}"
    );
    row(&mut md, "requests/s", "rps", 0);
    row(
        &mut md,
        "server CPU per request, µs",
        "cpu_us_per_request",
        2,
    );
    row(&mut md, "p50 latency, µs (wrk)", "wrk_p50_us", 0);
    row(&mut md, "p99 latency, µs (wrk)", "wrk_p99_us", 0);
    errors(
        &mut md,
        "non-2xx answers and socket errors (all runs)",
        "wrk_errors",
    );

    let _ = writeln!(
        md,
        "\n### WebSocket\n\n\
         `ws-load`: {WS_CONNECTIONS} connections, {WS_SIZE}-byte binary messages at \
         {WS_RATE} msg/s in all, every echo checked byte for byte.\n\n{header}"
    );
    row(&mut md, "server CPU per message, µs", "ws_cpu_us", 2);
    row(&mut md, "msg/s reached", "ws_msgs", 0);
    row(&mut md, "p50 latency, µs", "ws_p50_us", 0);
    row(&mut md, "p99 latency, µs", "ws_p99_us", 0);
    errors(
        &mut md,
        "failed connections, mismatched and lost echoes (all runs)",
        "ws_errors",
    );

    let _ = writeln!(
        md,
        "\n### Idle memory per connection\n\n\
         The server's resident memory with {many} idle connections, over its resident \
         memory before them (a fresh server, after one connection of the kind), per \
         connection.\n\n{header}"
    );
    row(
        &mut md,
        "KiB per idle WebSocket connection (each has echoed one message)",
        "idle_ws_kib",
        2,
    );
    row(
        &mut md,
        "KiB per idle HTTP/1.1 keep-alive connection (each has had one GET /echo)",
        "idle_http_kib",
        2,
    );
    row(
        &mut md,
        "resident memory before (fresh, one WebSocket opened and closed), KiB",
        "rss_before_kib",
        0,
    );
    md
}
