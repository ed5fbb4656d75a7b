//! WebSocket load at a fixed rate, for the HTTP and WebSocket section of `bench/compare`.
//!
//! Opens `-c` connections (default 100) to `ws://ADDR/`, then sends binary messages of
//! `-s` bytes (default 64) at `--rate` messages a second in all (default 20,000), in
//! turn over the connections, for `-d` seconds (default 10). Every echo is checked byte
//! for byte against the message it answers (each message differs: it carries its
//! number). After the last send it waits at most 2 s for the replies still due, then
//! closes; anything not back by then counts as lost. So it sends at most `rate × secs`
//! messages and ends by itself.
//!
//! One thread, one edge-triggered epoll loop (mio) over tungstenite's blocking-API
//! client on non-blocking sockets: the load generator stays light and on one core. The
//! rate is kept to epoll's millisecond: the messages due in a millisecond go out
//! together, each to another connection.
//!
//! `ws-load ADDR [-c N] [--rate MSGS] [-d SECS] [-s BYTES] [--server-pid PID] [--json]`
//!
//! With `--server-pid`, it also reports the server's CPU time (every thread's, from
//! /proc's scheduler accounting, as `coop-echo bench` reads it) per message, from the
//! first send to the last reply: the handshakes and closes are left out. `--json` prints
//! one JSON report on stdout, for `bench/compare`.

use std::collections::VecDeque;
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Bytes, Error, Message, WebSocket};

/// How long after the last send replies may still come.
const DRAIN: Duration = Duration::from_secs(2);

/// Connecting and the opening handshake, each connection, at most.
const HANDSHAKE_TIME: Duration = Duration::from_secs(5);

struct Args {
    addr: SocketAddr,
    connections: usize,
    rate: u64,
    secs: f64,
    size: usize,
    server_pid: Option<u32>,
    json: bool,
}

fn main() {
    match parse().and_then(|args| run(&args).map(|report| (args, report))) {
        Ok((args, report)) => {
            if args.json {
                println!("{report}");
            } else {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            }
        }
        Err(e) => {
            eprintln!("ws-load: {e}");
            std::process::exit(1);
        }
    }
}

fn parse() -> io::Result<Args> {
    let bad = |why: String| io::Error::new(ErrorKind::InvalidInput, why);
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .ok_or_else(|| bad("usage: ws-load ADDR [-c N] [--rate MSGS] [-d SECS] [-s BYTES] [--server-pid PID] [--json]".into()))?
        .parse()
        .map_err(|e| bad(format!("ADDR: {e}")))?;
    let mut parsed = Args {
        addr,
        connections: 100,
        rate: 20_000,
        secs: 10.0,
        size: 64,
        server_pid: None,
        json: false,
    };
    while let Some(flag) = args.next() {
        if flag == "--json" {
            parsed.json = true;
            continue;
        }
        let value = args
            .next()
            .ok_or_else(|| bad(format!("{flag} needs a value")))?;
        let number = |what: &str| {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && v.is_finite())
                .ok_or_else(|| bad(format!("{flag} takes {what} above 0, not '{value}'")))
        };
        match flag.as_str() {
            "-c" => parsed.connections = number("a number of connections")? as usize,
            "--rate" => parsed.rate = number("messages a second")? as u64,
            "-d" => parsed.secs = number("seconds")?,
            "-s" => parsed.size = number("bytes")? as usize,
            "--server-pid" => parsed.server_pid = Some(number("a process id")? as u32),
            _ => return Err(bad(format!("unknown option {flag}"))),
        }
    }
    if parsed.connections == 0 || parsed.rate == 0 || parsed.size == 0 {
        return Err(bad("-c, --rate and -s take 1 or more".into()));
    }
    Ok(parsed)
}

/// One connection and the messages it waits for the echo of, oldest first.
struct Conn {
    ws: WebSocket<TcpStream>,
    waiting: VecDeque<(u64, Instant)>,
    alive: bool,
}

/// What the run adds up.
#[derive(Default)]
struct Tally {
    sent: u64,
    received: u64,
    mismatches: u64,
    errors: u64,
}

fn run(args: &Args) -> io::Result<serde_json::Value> {
    let mut poll = Poll::new()?;
    let mut conns = Vec::with_capacity(args.connections);
    let mut connect_failures = 0u64;
    for i in 0..args.connections {
        match connect(args.addr) {
            Ok(ws) => {
                let fd = ws.get_ref().as_raw_fd();
                poll.registry().register(
                    &mut SourceFd(&fd),
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )?;
                conns.push(Conn {
                    ws,
                    waiting: VecDeque::new(),
                    alive: true,
                });
            }
            Err(e) => {
                if connect_failures == 0 {
                    eprintln!("ws-load: connection {i} failed: {e}");
                }
                connect_failures += 1;
            }
        }
    }
    if conns.is_empty() {
        return Err(io::Error::other("no connection opened"));
    }

    let planned = (args.rate as f64 * args.secs).round() as u64;
    let mut latency = Histogram::<u64>::new(3).map_err(io::Error::other)?;
    let mut tally = Tally::default();
    let mut events = Events::with_capacity(1024);
    let server_start = args.server_pid.and_then(cpu_time_of);
    let client_start = schedstat(Path::new("/proc/thread-self"));
    let start = Instant::now();
    let mut last_reply = start;
    let mut last_send = start;
    loop {
        let now = Instant::now();
        // Every message due by now: message k is due k / rate seconds in.
        let due = ((now - start).as_secs_f64() * args.rate as f64) as u64 + 1;
        while tally.sent < due.min(planned) {
            let k = tally.sent;
            tally.sent += 1;
            let n = conns.len();
            let conn = &mut conns[k as usize % n];
            if !conn.alive {
                continue;
            }
            conn.waiting.push_back((k, Instant::now()));
            match conn.ws.send(Message::Binary(payload(k, args.size))) {
                // A send that would block stays queued in tungstenite; the writable
                // event flushes it.
                Ok(()) => {}
                Err(Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => fail(conn, &mut tally, &e),
            }
            last_send = Instant::now();
        }
        let outstanding = conns.iter().any(|c| c.alive && !c.waiting.is_empty());
        let timeout = if tally.sent < planned {
            let next = start + Duration::from_secs_f64(tally.sent as f64 / args.rate as f64);
            next.saturating_duration_since(now)
        } else if outstanding {
            match (last_send + DRAIN).checked_duration_since(now) {
                Some(left) => left,
                None => break,
            }
        } else {
            break;
        };
        poll.poll(&mut events, Some(timeout))?;
        for event in &events {
            let conn = &mut conns[event.token().0];
            if !conn.alive {
                continue;
            }
            if event.is_writable()
                && let Err(e) = conn.ws.flush()
                && !matches!(&e, Error::Io(e) if e.kind() == ErrorKind::WouldBlock)
            {
                fail(conn, &mut tally, &e);
                continue;
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                loop {
                    match conn.ws.read() {
                        Ok(Message::Binary(data)) => {
                            let Some((k, sent)) = conn.waiting.pop_front() else {
                                tally.mismatches += 1; // an echo of nothing sent
                                continue;
                            };
                            let at = Instant::now();
                            tally.received += 1;
                            last_reply = at;
                            if data != payload(k, args.size) {
                                tally.mismatches += 1;
                            }
                            let _ = latency.record((at - sent).as_micros() as u64);
                        }
                        Ok(Message::Text(_)) => tally.mismatches += 1,
                        Ok(_) => {} // ping (answered by tungstenite), pong, frame
                        Err(Error::Io(e)) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) => {
                            fail(conn, &mut tally, &e);
                            break;
                        }
                    }
                }
            }
        }
    }
    let server_cpu = args
        .server_pid
        .and_then(cpu_time_of)
        .zip(server_start)
        .map(|(end, start)| end.saturating_sub(start));
    let client_cpu = schedstat(Path::new("/proc/thread-self"))
        .zip(client_start)
        .map(|(end, start)| end.saturating_sub(start));
    let lost: u64 = conns.iter().map(|c| c.waiting.len() as u64).sum();
    let seconds = (last_reply - start).as_secs_f64();
    for conn in conns.iter_mut().filter(|c| c.alive) {
        // Best effort: the close frame, then the socket goes.
        let _ = conn.ws.close(None);
        let _ = conn.ws.flush();
    }
    let per_msg = |cpu: Duration| cpu.as_secs_f64() * 1e6 / tally.received.max(1) as f64;
    let q = |quantile: f64| latency.value_at_quantile(quantile);
    Ok(serde_json::json!({
        "connections": conns.len(),
        "connect_failures": connect_failures,
        "size": args.size,
        "rate": args.rate,
        "planned": planned,
        "sent": tally.sent,
        "received": tally.received,
        "lost": lost,
        "mismatches": tally.mismatches,
        "errors": tally.errors,
        "seconds": seconds,
        "messages_per_sec": tally.received as f64 / seconds.max(1e-9),
        "latency_us": {
            "p50": q(0.5),
            "p90": q(0.9),
            "p99": q(0.99),
            "p999": q(0.999),
            "max": latency.max(),
        },
        "server_cpu_us_per_msg": server_cpu.map(per_msg),
        "client_cpu_us_per_msg": client_cpu.map(per_msg),
    }))
}

/// Connects and shakes hands, blocking; the socket is left non-blocking.
fn connect(addr: SocketAddr) -> io::Result<WebSocket<TcpStream>> {
    let stream = TcpStream::connect_timeout(&addr, HANDSHAKE_TIME)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(HANDSHAKE_TIME))?;
    stream.set_write_timeout(Some(HANDSHAKE_TIME))?;
    // No write buffering: each message goes out as it is sent, as the servers send.
    let config = WebSocketConfig::default().write_buffer_size(0);
    let (mut ws, _) =
        tungstenite::client::client_with_config(format!("ws://{addr}/"), stream, Some(config))
            .map_err(|e| io::Error::other(format!("WebSocket handshake: {e}")))?;
    ws.get_mut().set_nonblocking(true)?;
    Ok(ws)
}

/// A connection that failed: counted once, then left alone.
fn fail(conn: &mut Conn, tally: &mut Tally, e: &Error) {
    if tally.errors == 0 {
        eprintln!("ws-load: a connection failed: {e}");
    }
    tally.errors += 1;
    conn.alive = false;
}

/// Message `k`: its number (little-endian), then bytes that follow from it.
fn payload(k: u64, size: usize) -> Bytes {
    let number = k.to_le_bytes();
    (0..size)
        .map(|i| number.get(i).copied().unwrap_or((k as usize + i) as u8))
        .collect()
}

/// CPU time (user + system) of every thread of process `pid`, from the scheduler's own
/// nanosecond accounting.
fn cpu_time_of(pid: u32) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        total += schedstat(&task.ok()?.path())?;
    }
    Some(total)
}

/// The CPU time in `schedstat` under a task's /proc directory.
fn schedstat(task: &Path) -> Option<Duration> {
    let stat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
}
