//! `coop-echo bench`: a load generator on the coop runtime.
//!
//! Every connection is one task that keeps up to `--pipeline` messages in flight, checks
//! every reply byte for byte (see [`verify`]) and records each round trip's latency in
//! one histogram. Closed loop by default: a connection sends its next message when a
//! reply comes back. With `--rate`, open loop: each connection sends on a fixed
//! schedule, and latency is measured from the *scheduled* time, so a server that stalls
//! cannot hide its tail behind the load generator's patience (the wrk2 method).

mod report;
pub mod verify;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::io::{self, IsTerminal};
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use clap::Args;
use coop::net::TcpStream;
use coop::time::{sleep_until, timeout};

pub use report::{Latency, Report, Tally};
use verify::{Tape, Verifier};

use crate::echo::Framing;

/// Options of `coop-echo bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to load.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Its port.
    #[arg(long, short, default_value_t = 25000)]
    pub port: u16,

    /// Connections to open and keep busy.
    #[arg(long, short, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,

    /// Bytes per message (the last one is a newline).
    #[arg(long, short, default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub size: u32,

    /// Seconds to send for [default: 10].
    #[arg(long, short, conflicts_with = "requests", value_parser = positive_seconds)]
    pub duration: Option<f64>,

    /// Messages to send in all, instead of a duration.
    #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Messages in flight per connection, at most.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub pipeline: u32,

    /// Send at this fixed total rate (messages per second over all connections): open
    /// loop, latency measured from each message's scheduled time.
    #[arg(long, value_parser = positive_rate)]
    pub rate: Option<f64>,

    /// The prefix the server puts in front of replies.
    #[arg(long, default_value = "GOT:")]
    pub prefix: OsString,

    /// The server's framing: where it puts the prefix.
    #[arg(long, value_enum, default_value_t = Framing::Chunk)]
    pub framing: Framing,

    /// Also report the server's CPU time per message, read from /proc/PID.
    #[arg(long)]
    pub server_pid: Option<u32>,

    /// Give up when no reply at all has come for this many seconds.
    #[arg(long, default_value_t = 10.0, value_parser = positive_seconds)]
    pub stall_timeout: f64,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1e6 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds in (0, 1000000]")),
    }
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a positive rate")),
    }
}

/// Bytes one read may take; the reads of all connections share one buffer.
const READ_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// What every connection shares.
struct Load {
    tape: Rc<Tape>,
    prefix: Rc<[u8]>,
    framing: Framing,
    pipeline: usize,
    connections: usize,
    /// The open-loop schedule, if any.
    pace: Option<Pace>,
    /// When sending stops, in a timed run.
    deadline: Option<Instant>,
    /// Messages left to send, in a counted run.
    budget: Cell<u64>,
    tally: RefCell<Tally>,
    /// Connections still running, and the waker of whoever waits for them.
    live: Cell<usize>,
    watcher: Cell<Option<Waker>>,
}

/// The open-loop schedule: message `k` of connection `c` is due at
/// `start + (k * connections + c) * gap`, so the sends of all connections interleave
/// evenly at the total rate.
struct Pace {
    start: Instant,
    /// Time between two sends, over all connections.
    gap: Duration,
    /// Connections waiting for their next send to fall due, woken by [`pacer`].
    waiting: Vec<Cell<Option<Waker>>>,
}

impl Pace {
    fn due(&self, connection: usize, message: u64, connections: usize) -> Instant {
        let slot = message as u128 * connections as u128 + connection as u128;
        let nanos = self.gap.as_nanos().saturating_mul(slot);
        self.start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

impl Load {
    /// Takes the right to send one more message.
    fn may_send(&self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        match self.budget.get() {
            0 => false,
            n => {
                self.budget.set(n - 1);
                true
            }
        }
    }

    fn sending_is_over(&self, now: Instant) -> bool {
        self.budget.get() == 0 || self.deadline.is_some_and(|d| now >= d)
    }
}

/// How often at most the pacer wakes: sends are at most this late (and the lateness is
/// in the latency, which is measured from the due time). Finer costs the load generator
/// a timer wake-up per message.
const PACER_RESOLUTION: Duration = Duration::from_micros(100);

/// Wakes every connection with a send that fell due: one timer for the whole load
/// instead of one per message.
async fn pacer(load: Rc<Load>) {
    let Some(pace) = &load.pace else { return };
    let n = load.connections as u128;
    let gap = pace.gap.as_nanos().max(1);
    let mut next_slot: u128 = 0;
    while load.live.get() > 0 {
        let now = Instant::now();
        let due_slots = now.saturating_duration_since(pace.start).as_nanos() / gap;
        // Each connection needs waking once, however many of its sends fell due.
        for slot in next_slot.max((due_slots + 1).saturating_sub(n))..=due_slots {
            if let Some(waker) = pace.waiting[(slot % n) as usize].take() {
                waker.wake();
            }
        }
        next_slot = due_slots + 1;
        if load.sending_is_over(now) {
            // Let everyone see the end, then stop.
            for waiting in &pace.waiting {
                if let Some(waker) = waiting.take() {
                    waker.wake();
                }
            }
            return;
        }
        let next_due =
            pace.start + Duration::from_nanos(u64::try_from(next_slot * gap).unwrap_or(u64::MAX));
        sleep_until(next_due.max(now + PACER_RESOLUTION)).await;
    }
}

/// Runs the load and prints the report. Exit status 1 if nothing could connect or a
/// reply was wrong.
pub fn run(args: BenchArgs) -> std::process::ExitCode {
    use std::process::ExitCode;
    match measure(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("coop-echo: cannot write the report as JSON: {e}"),
                }
            } else {
                println!("{report}");
            }
            if report.mismatches > 0 || report.messages == 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("coop-echo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the load described by `args` and measures it.
pub fn measure(args: &BenchArgs) -> io::Result<Report> {
    let target = if args.host.contains(':') {
        format!("[{}]:{}", args.host, args.port)
    } else {
        format!("{}:{}", args.host, args.port)
    };
    let addr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {target}: {e}")))?
        .next()
        .ok_or_else(|| io::Error::other(format!("{target} resolves to no address")))?;
    let prefix: Rc<[u8]> = Rc::from(args.prefix.clone().into_encoded_bytes());
    let tape = Tape::new(args.size as usize, &prefix).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the prefix uses every letter and digit: no bytes left to send",
        )
    })?;
    let connections = args.connections as usize;
    let runtime = coop::Runtime::new()?;
    runtime.block_on(async {
        let streams = connect_all(addr, connections, &target, args.quiet).await?;
        let opened = streams.len();
        let duration = Duration::from_secs_f64(args.duration.unwrap_or(10.0));
        let server_cpu_start = args.server_pid.and_then(cpu_time_of);
        let client_cpu_start = cpu_time_of(std::process::id());
        // Timed from here: connecting is not part of the load.
        let start = Instant::now();
        let load = Rc::new(Load {
            tape: Rc::new(tape),
            prefix: Rc::clone(&prefix),
            framing: args.framing,
            pipeline: args.pipeline as usize,
            connections: opened,
            pace: args.rate.map(|rate| Pace {
                start,
                gap: Duration::from_secs_f64(1.0 / rate),
                waiting: (0..opened).map(|_| Cell::new(None)).collect(),
            }),
            deadline: args.requests.is_none().then_some(start + duration),
            budget: Cell::new(args.requests.unwrap_or(u64::MAX)),
            tally: RefCell::new(Tally::new()),
            live: Cell::new(opened),
            watcher: Cell::new(None),
        });
        load.tally.borrow_mut().connect_failures = (connections - opened) as u64;
        for (id, stream) in streams.into_iter().enumerate() {
            drop(coop::spawn(drive(id, stream, Rc::clone(&load))));
        }
        drop(coop::spawn(pacer(Rc::clone(&load))));
        let progress = Progress::new(args.quiet, args.duration.map(|_| duration));
        watch(
            &load,
            start,
            Duration::from_secs_f64(args.stall_timeout),
            &progress,
        )
        .await;
        let seconds = start.elapsed().as_secs_f64();
        progress.finish();

        let client_cpu = cpu_time_of(std::process::id())
            .zip(client_cpu_start)
            .map(|(end, start)| end.saturating_sub(start));
        let server_cpu = args
            .server_pid
            .and_then(cpu_time_of)
            .zip(server_cpu_start)
            .map(|(end, start)| end.saturating_sub(start));
        let tally = load.tally.borrow();
        let per_msg = |cpu: Duration| cpu.as_secs_f64() * 1e6 / tally.messages.max(1) as f64;
        Ok(Report {
            target: target.clone(),
            connections: args.connections,
            size: args.size,
            pipeline: args.pipeline,
            rate: args.rate,
            seconds,
            messages: tally.messages,
            messages_per_sec: tally.messages as f64 / seconds,
            mb_per_sec: tally.messages as f64 * f64::from(args.size) / seconds / 1e6,
            bytes_received: tally.bytes_received,
            latency_us: Latency::of(&tally.latency),
            mismatches: tally.mismatches,
            errors: tally.errors,
            connect_failures: tally.connect_failures,
            first_error: tally.first_error.clone(),
            client_cpu_us_per_msg: client_cpu.map_or(0.0, per_msg),
            server_cpu_us_per_msg: server_cpu.map(per_msg),
        })
    })
}

/// Opens the connections one after another (a burst of thousands of simultaneous
/// connects would only measure the server's SYN queue). Fails if none opens.
async fn connect_all(
    addr: SocketAddr,
    n: usize,
    target: &str,
    quiet: bool,
) -> io::Result<Vec<TcpStream>> {
    let mut streams = Vec::with_capacity(n);
    let mut first_error = None;
    for _ in 0..n {
        let connected = timeout(Duration::from_secs(10), TcpStream::connect(addr)).await;
        match connected.map_err(io::Error::from).and_then(|r| r) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                streams.push(stream);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match (streams.is_empty(), first_error) {
        (true, Some(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot connect to {target}: {e}"),
        )),
        (false, Some(e)) => {
            if !quiet {
                eprintln!(
                    "coop-echo: {} of {n} connections failed: {e}",
                    n - streams.len()
                );
            }
            Ok(streams)
        }
        (_, None) => Ok(streams),
    }
}

/// Waits until every connection is done, showing progress once a second; gives up when
/// no reply has come for `stall`.
async fn watch(load: &Load, start: Instant, stall: Duration, progress: &Progress) {
    let mut tick = sleep_until(start + Duration::from_secs(1));
    let mut last_count = 0;
    let mut last_progress = start;
    loop {
        let all_done = std::future::poll_fn(|cx| {
            if load.live.get() == 0 {
                return Poll::Ready(true);
            }
            load.watcher.set(Some(cx.waker().clone()));
            Pin::new(&mut tick).poll(cx).map(|()| false)
        })
        .await;
        if all_done {
            return;
        }
        let now = Instant::now();
        let count = load.tally.borrow().messages;
        progress.show(now - start, count, &load.tally.borrow());
        if count != last_count {
            last_count = count;
            last_progress = now;
        } else if now - last_progress >= stall {
            let mut tally = load.tally.borrow_mut();
            let waiting = load.live.get();
            tally.errors += waiting as u64;
            tally.fail(format!(
                "no reply for {:.0} s: gave up on {waiting} connections",
                stall.as_secs_f64()
            ));
            return;
        }
        tick.reset(now + Duration::from_secs(1));
    }
}

/// One connection: sends, verifies, records, until its share of the load is done.
async fn drive(id: usize, stream: TcpStream, load: Rc<Load>) {
    if let Err(e) = exchange(id, &stream, &load).await {
        let mut tally = load.tally.borrow_mut();
        tally.errors += 1;
        tally.fail(format_args!("connection {id}: {e}"));
    }
    load.live.set(load.live.get() - 1);
    if load.live.get() == 0 {
        if let Some(waker) = load.watcher.take() {
            waker.wake();
        }
    }
}

async fn exchange(id: usize, stream: &TcpStream, load: &Load) -> io::Result<()> {
    let size = load.tape.size();
    let mut verifier = Verifier::new(
        Rc::clone(&load.tape),
        Rc::clone(&load.prefix),
        load.framing,
        id,
    );
    // When each message in flight was sent (or was due, in open loop).
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(load.pipeline);
    let mut message = 0u64;
    let mut cursor = load.tape.first(id);
    // Bytes of `message` already written, while it is only partly sent.
    let mut partial: Option<usize> = None;
    loop {
        // One clock read per turn: replies that arrived are timed by it, and sends
        // started now are stamped with it.
        let now = Instant::now();

        // Take in what has arrived.
        SCRATCH.with_borrow_mut(|buf| {
            let n = match stream.try_read(buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            let done = verifier.feed(&buf[..n]).map_err(|m| {
                load.tally.borrow_mut().mismatches += 1;
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the reply to message {} is not its echo", m.message),
                )
            })?;
            let mut tally = load.tally.borrow_mut();
            tally.bytes_received += n as u64;
            for _ in 0..done {
                let sent = in_flight.pop_front().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a reply to nothing")
                })?;
                tally.record(now.saturating_duration_since(sent));
                tally.bytes_sent += size as u64;
            }
            Ok(())
        })?;

        // Send what the window, the schedule and the budget allow.
        let mut waiting_for_schedule = false;
        loop {
            let from = match partial {
                Some(from) => from,
                None => {
                    if in_flight.len() >= load.pipeline {
                        break;
                    }
                    let due = match &load.pace {
                        Some(pace) => pace.due(id, message, load.connections),
                        None => now,
                    };
                    if due > now {
                        waiting_for_schedule = !load.sending_is_over(now);
                        break;
                    }
                    if !load.may_send(now) {
                        break;
                    }
                    in_flight.push_back(due);
                    0
                }
            };
            match stream.try_write_vectored(&load.tape.slices(cursor, from)) {
                Ok(n) if from + n == size => {
                    partial = None;
                    message += 1;
                    cursor = load.tape.next(cursor);
                }
                Ok(n) => partial = Some(from + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    partial = Some(from);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if in_flight.is_empty() && partial.is_none() && load.sending_is_over(now) {
            return Ok(());
        }

        // Nothing to do until a reply, room to write, or the pacer says a send is due.
        let mut registered = false;
        std::future::poll_fn(|cx| {
            if stream.poll_read_ready(cx).is_ready()
                || (partial.is_some() && stream.poll_write_ready(cx).is_ready())
            {
                return Poll::Ready(());
            }
            if let (true, Some(pace)) = (waiting_for_schedule, &load.pace) {
                let slot = &pace.waiting[id];
                match slot.take() {
                    // The pacer took the waker: a send fell due.
                    None if registered => return Poll::Ready(()),
                    _ => slot.set(Some(cx.waker().clone())),
                }
                registered = true;
            }
            Poll::Pending
        })
        .await;
    }
}

/// CPU time (user + system) of every thread of process `pid`, from the scheduler's own
/// nanosecond accounting.
fn cpu_time_of(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Once-a-second progress: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
}

impl Progress {
    fn new(quiet: bool, duration: Option<Duration>) -> Progress {
        if quiet {
            return Progress {
                bar: None,
                lines: false,
            };
        }
        if !io::stderr().is_terminal() {
            return Progress {
                bar: None,
                lines: true,
            };
        }
        let bar = match duration {
            Some(d) => indicatif::ProgressBar::new(d.as_secs()),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        Progress {
            bar: Some(bar),
            lines: false,
        }
    }

    fn show(&self, elapsed: Duration, messages: u64, tally: &Tally) {
        let rate = messages as f64 / elapsed.as_secs_f64();
        let p99 = tally.latency.value_at_quantile(0.99) as f64 / 1000.0;
        let line = format!(
            "{messages} replies, {rate:.0} msg/s, p99 {p99:.0} µs, {} errors",
            tally.errors + tally.mismatches
        );
        if let Some(bar) = &self.bar {
            bar.set_position(elapsed.as_secs());
            bar.set_message(line);
        } else if self.lines {
            eprintln!("[{:>4.0}s] {line}", elapsed.as_secs_f64());
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
