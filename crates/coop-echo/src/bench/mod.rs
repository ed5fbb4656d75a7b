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
mod wire;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::future::Future;
use std::io::{self, IsTerminal};
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::Barrier;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use clap::Args;
use coop::net::TcpStream;
use coop::time::{sleep_until, timeout};

pub use report::{Latency, Report, Tally};
use verify::{Tape, Verifier};
use wire::{TlsWire, Wire};

use crate::echo::Framing;
use crate::proxy::{self, SendProxy};
use crate::tls::ClientTls;

/// Options of `coop-echo bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Server to load: a name or an address (IPv4 or IPv6).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Its port.
    #[arg(long, short, value_name = "PORT", default_value_t = 25000)]
    pub port: u16,

    /// Connections to open and keep busy.
    #[arg(long, short, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,

    /// Bytes per message (the last one is a newline).
    #[arg(long, short, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub size: u32,

    /// Send for this many seconds (unless -n gives a number of messages).
    #[arg(long, short, value_name = "SECS", default_value_t = 10.0,
          conflicts_with = "requests", value_parser = positive_seconds)]
    pub duration: f64,

    /// Messages to send in all, instead of a duration.
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Messages in flight per connection, at most.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub pipeline: u32,

    /// Send at this fixed total rate (messages per second over all connections): open
    /// loop, latency measured from each message's scheduled time.
    #[arg(long, value_name = "PER_SEC", value_parser = positive_rate)]
    pub rate: Option<f64>,

    /// The prefix the server puts in front of replies.
    #[arg(long, default_value = "GOT:")]
    pub prefix: OsString,

    /// Begin each connection with a PROXY protocol header naming its own address, as a
    /// load balancer would (for a server run with --proxy-protocol). A v1 header naming its own
    /// connection is what HAProxy's health checks send: the server logs such a
    /// connection at debug level.
    #[arg(long, value_enum, value_name = "VERSION")]
    pub send_proxy: Option<SendProxy>,

    /// The server's framing: where it puts the prefix.
    #[arg(long, value_enum, default_value_t = Framing::Chunk)]
    pub framing: Framing,

    /// Also report the server's CPU time per message, read from /proc/PID.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// Give up when no reply at all has come for this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_seconds)]
    pub stall_timeout: f64,

    /// Run the load on N threads, each with its own runtime and its share of the
    /// connections, messages and rate; one report, from every thread's figures merged
    /// (no progress display with more than one).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// Speak TLS (to a server run with --tls-cert): each connection's handshake is timed
    /// (handshakes per second), then the load runs over TLS. Give --tls-ca or --insecure.
    #[arg(long, requires = "trust")]
    pub tls: bool,

    /// Trust the certificates in this file (PEM) to sign the server's.
    #[arg(long, value_name = "PEM", requires = "tls", group = "trust")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// The name the server's certificate must carry, if not HOST.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_name: Option<String>,

    /// Accept any certificate: the connections are encrypted, but to whom is not checked.
    #[arg(long, requires = "tls", group = "trust")]
    pub insecure: bool,

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

/// The open-loop schedule: send slot `s` is due `s / rate` seconds after the start, and
/// message `k` of connection `c` has slot `k * connections + c`, so the sends of all
/// connections interleave evenly at the total rate.
struct Pace {
    start: Instant,
    /// Sends per second, over all connections.
    rate: f64,
    /// Connections waiting for their next send to fall due, woken by [`pacer`].
    waiting: Vec<Cell<Option<Waker>>>,
}

impl Pace {
    /// When `slot` falls due. Computed from the slot, not by adding up a gap rounded to
    /// the nanosecond, which drifts (1/30,000 s is 33,333.3 ns).
    fn at(&self, slot: u128) -> Instant {
        // `as` saturates: a slot too far to say is due in 584 years.
        let nanos = (slot as f64 * 1e9 / self.rate) as u64;
        self.start + Duration::from_nanos(nanos)
    }

    fn due(&self, connection: usize, message: u64, connections: usize) -> Instant {
        self.at(message as u128 * connections as u128 + connection as u128)
    }

    /// How many slots are due by `now` (slots `0..n`), by the same arithmetic as
    /// [`Self::at`], so that a connection woken for a slot finds it due.
    fn due_by(&self, now: Instant) -> u128 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let mut n = (elapsed * self.rate) as u128 + 1;
        while self.at(n) <= now {
            n += 1;
        }
        while n > 0 && self.at(n - 1) > now {
            n -= 1;
        }
        n
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
    let mut next_slot: u128 = 0;
    while load.live.get() > 0 {
        let now = Instant::now();
        let due = pace.due_by(now).max(next_slot);
        // Each connection needs waking once, however many of its sends fell due.
        for slot in next_slot.max(due.saturating_sub(n))..due {
            if let Some(waker) = pace.waiting[(slot % n) as usize].take() {
                waker.wake();
            }
        }
        next_slot = due;
        if load.sending_is_over(now) {
            // Let everyone see the end, then stop.
            for waiting in &pace.waiting {
                if let Some(waker) = waiting.take() {
                    waker.wake();
                }
            }
            return;
        }
        sleep_until(pace.at(next_slot).max(now + PACER_RESOLUTION)).await;
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
                // The report may have gone to a file or a pipe: the reason goes to stderr.
                let reason = report
                    .first_error
                    .as_deref()
                    .unwrap_or("no reply came back");
                crate::service::fail(format_args!("bench failed: {reason}"))
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => crate::service::fail(format_args!("{e}")),
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
    let prefix = args.prefix.clone().into_encoded_bytes();
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if Tape::new(args.size as usize, &prefix).is_none() {
        return Err(invalid(
            "the prefix uses every letter and digit: no bytes left to send",
        ));
    }
    let tls = match (args.tls, &args.tls_ca) {
        (false, _) => None,
        (true, None) if !args.insecure => {
            return Err(invalid(crate::tls::NO_TRUST));
        }
        (true, ca) => Some(
            ClientTls::new(ca.as_deref(), args.tls_name.as_deref(), &target)
                .map_err(|e| invalid(&e))?,
        ),
    };
    let threads = args.threads.max(1) as u64;
    let connections = u64::from(args.connections);
    if threads > connections {
        return Err(invalid(&format!(
            "--threads {threads} needs at least as many connections (-c {connections})"
        )));
    }
    let duration = Duration::from_secs_f64(args.duration);
    // Open loop for a duration sends exactly rate × duration messages (their slots
    // fall within it): a count, rather than a deadline that a late send could miss.
    let budget = match (args.requests, args.rate) {
        (Some(n), _) => Some(n),
        (None, Some(rate)) => Some(((rate * args.duration).round() as u64).max(1)),
        (None, None) => None,
    };
    if budget.is_some_and(|n| n < threads) {
        return Err(invalid(&format!(
            "--threads {threads} needs at least as many messages to send"
        )));
    }
    // Thread `i`'s share of `total`: the remainder goes to the first ones.
    let share = |total: u64, i: u64| total / threads + u64::from(i < total % threads);
    let parts: Vec<Part> = (0..threads)
        .map(|i| {
            let total = budget;
            let budget = budget.map(|n| share(n, i));
            Part {
                connections: share(connections, i) as usize,
                budget,
                // The rate in proportion to the messages: each thread's schedule spans
                // the same time.
                rate: args
                    .rate
                    .zip(budget.zip(total))
                    .map(|(rate, (mine, all))| rate * mine as f64 / all as f64),
                show_progress: threads == 1 && !args.quiet,
            }
        })
        .collect();
    let server_cpu_start = args.server_pid.and_then(cpu_time_of);
    let go = Barrier::new(parts.len());
    let run = |part| Run {
        args,
        addr,
        target: &target,
        prefix: &prefix,
        part,
        duration,
        go: &go,
    };
    // Each load thread's own CPU time, read by itself before it ends: the process's
    // tasks in /proc are only the threads still alive.
    let timed = |part| {
        let start = thread_cpu_time();
        let outcome = run(part).run(&tls);
        let cpu = thread_cpu_time()
            .zip(start)
            .map(|(end, start)| end.saturating_sub(start));
        (outcome, cpu)
    };
    let outcomes: Vec<(io::Result<PartOutcome>, Option<Duration>)> = if parts.len() == 1 {
        parts.iter().map(timed).collect()
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> = parts
                .iter()
                .map(|part| {
                    let timed = &timed;
                    scope.spawn(move || timed(part))
                })
                .collect();
            running
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|_| (Err(io::Error::other("a load thread panicked")), None))
                })
                .collect()
        })
    };
    let client_cpu = outcomes
        .iter()
        .map(|(_, cpu)| *cpu)
        .sum::<Option<Duration>>();
    let outcomes = outcomes.into_iter().map(|(outcome, _)| outcome).collect();
    let server_cpu = args
        .server_pid
        .and_then(cpu_time_of)
        .zip(server_cpu_start)
        .map(|(end, start)| end.saturating_sub(start));

    let (tally, seconds, handshakes) = merge(outcomes, connections)?;
    if args.threads > 1 && tally.connect_failures > 0 && !args.quiet {
        eprintln!(
            "coop-echo: {} of {connections} connections failed: {}",
            tally.connect_failures,
            tally.first_error.as_deref().unwrap_or("(no reason)")
        );
    }
    // No reply verified, no figure per reply: a division by 1 would invent one.
    let measured = tally.messages > 0;
    let per_msg = |cpu: Duration| cpu.as_secs_f64() * 1e6 / tally.messages as f64;
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
        latency_us: measured.then(|| Latency::of(&tally.latency)),
        mismatches: tally.mismatches,
        errors: tally.errors,
        connect_failures: tally.connect_failures,
        first_error: tally.first_error.clone(),
        client_cpu_us_per_msg: client_cpu.filter(|_| measured).map(per_msg),
        server_cpu_us_per_msg: server_cpu.filter(|_| measured).map(per_msg),
        tls: args.tls,
        // A rate over a few handshakes is mostly one-off setup, and varies threefold.
        handshakes_per_sec: handshakes.filter(|_| args.tls && args.connections >= HANDSHAKES_TIMED),
    })
}

/// Every thread's figures as one: the histograms merged, the counts summed, the run as
/// long as its longest thread, and the connections opened per second of the longest
/// connecting (`None` if none opened). Fails, as one thread does, if no connection opened
/// at all (with the first reason), or if a thread failed otherwise.
fn merge(
    outcomes: Vec<io::Result<PartOutcome>>,
    connections: u64,
) -> io::Result<(Tally, f64, Option<f64>)> {
    let mut tally = Tally::new();
    let mut seconds: f64 = 0.0;
    let mut connecting: f64 = 0.0;
    let mut connected = 0;
    for outcome in outcomes {
        let part = outcome?;
        seconds = seconds.max(part.seconds);
        connecting = connecting.max(part.connecting);
        connected += part.connected;
        tally.merge(part.tally);
    }
    if connected == 0 && connections > 0 {
        let why = tally
            .first_error
            .take()
            .unwrap_or_else(|| "no connection opened".into());
        return Err(io::Error::other(why));
    }
    let per_sec = (connected > 0 && connecting > 0.0).then(|| connected as f64 / connecting);
    Ok((tally, seconds, per_sec))
}

/// One thread's share of the load.
#[derive(Debug)]
struct Part {
    connections: usize,
    /// Messages to send, in a counted run.
    budget: Option<u64>,
    /// Sends per second, in an open-loop run.
    rate: Option<f64>,
    show_progress: bool,
}

/// What one thread measured.
struct PartOutcome {
    tally: Tally,
    seconds: f64,
    /// How long opening its connections took (with their handshakes, over TLS).
    connecting: f64,
    /// Connections it opened.
    connected: usize,
}

/// How a thread's connections speak TLS: the client's settings, and the name the
/// server's certificate must carry.
/// Connections below which no handshake rate is reported: over a few, one-off setup
/// dominates it.
pub(crate) const HANDSHAKES_TIMED: u32 = 100;

/// Handshakes at once per thread, over TLS: enough to keep a server's core busy with
/// them (its part and the client's alternate), few enough not to measure its SYN queue.
const HANDSHAKE_LANES: usize = 8;

/// One thread's share, and what it needs to run it.
struct Run<'a> {
    args: &'a BenchArgs,
    addr: SocketAddr,
    target: &'a str,
    prefix: &'a [u8],
    part: &'a Part,
    duration: Duration,
    go: &'a Barrier,
}

impl Run<'_> {
    /// Runs the share on a runtime of its own. Every thread starts its load at once,
    /// after all have connected (`go`): connecting is not part of the load.
    fn run(&self, tls: &Option<ClientTls>) -> io::Result<PartOutcome> {
        match tls {
            None => self.connect_and_load(1, |stream| std::future::ready(Ok(stream))),
            Some(ClientTls { config, name }) => {
                let connector = futures_rustls::TlsConnector::from(Arc::clone(config));
                let name = name.clone();
                self.connect_and_load(HANDSHAKE_LANES, move |stream| {
                    let handshake = connector.connect(name.clone(), stream);
                    async move {
                        let session = handshake.await.map_err(|e| {
                            io::Error::new(e.kind(), crate::tls::client_failure(&e))
                        })?;
                        let (stream, session) = session.into_inner();
                        Ok(TlsWire { session, stream })
                    }
                })
            }
        }
    }

    /// Opens the connections (`open` turns each new TCP stream into the load's transport,
    /// `lanes` at a time), waits for every thread at `go`, then runs the load.
    fn connect_and_load<W, F>(
        &self,
        lanes: usize,
        open: impl Fn(TcpStream) -> F + 'static,
    ) -> io::Result<PartOutcome>
    where
        W: Wire + 'static,
        F: Future<Output = io::Result<W>> + 'static,
    {
        let Run {
            args,
            addr,
            target,
            prefix,
            part,
            duration,
            go,
        } = *self;
        let prefix: Rc<[u8]> = Rc::from(prefix);
        let runtime = coop::Runtime::new();
        let connecting = Instant::now();
        let connected = runtime
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        let streams = connected.and_then(|runtime| {
            runtime.block_on(connect_all(
                addr,
                part.connections,
                target,
                args.send_proxy,
                // Several threads: `measure` says once how many failed in all.
                args.quiet || args.threads > 1,
                lanes,
                open,
            ))
        });
        let connecting = connecting.elapsed().as_secs_f64();
        // Every thread passes here once, connected or not: none waits for one that failed.
        go.wait();
        let runtime = runtime?;
        let streams = match streams {
            Ok(streams) => streams,
            // None of its share connected: counted, as one thread counts the connections
            // it could not open; the other threads' load goes on.
            Err(e) => {
                let mut tally = Tally::new();
                tally.connect_failures = part.connections as u64;
                tally.fail(&e);
                return Ok(PartOutcome {
                    tally,
                    seconds: 0.0,
                    connecting,
                    connected: 0,
                });
            }
        };
        let tape = Tape::new(args.size as usize, &prefix)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no bytes left to send"))?;
        runtime.block_on(async {
            let opened = streams.len();
            // Timed from here: connecting is not part of the load.
            let start = Instant::now();
            let load = Rc::new(Load {
                tape: Rc::new(tape),
                prefix: Rc::clone(&prefix),
                framing: args.framing,
                pipeline: args.pipeline as usize,
                connections: opened,
                pace: part.rate.map(|rate| Pace {
                    start,
                    rate,
                    waiting: (0..opened).map(|_| Cell::new(None)).collect(),
                }),
                deadline: part.budget.is_none().then_some(start + duration),
                budget: Cell::new(part.budget.unwrap_or(u64::MAX)),
                tally: RefCell::new(Tally::new()),
                live: Cell::new(opened),
                watcher: Cell::new(None),
            });
            load.tally.borrow_mut().connect_failures = (part.connections - opened) as u64;
            for (id, stream) in streams.into_iter().enumerate() {
                drop(coop::spawn(drive(id, stream, Rc::clone(&load))));
            }
            drop(coop::spawn(pacer(Rc::clone(&load))));
            let progress = Progress::new(
                !part.show_progress,
                args.requests.is_none().then_some(duration),
            );
            watch(
                &load,
                start,
                Duration::from_secs_f64(args.stall_timeout),
                &progress,
            )
            .await;
            let seconds = start.elapsed().as_secs_f64();
            progress.finish();
            let tally = std::mem::replace(&mut *load.tally.borrow_mut(), Tally::new());
            Ok(PartOutcome {
                tally,
                seconds,
                connecting,
                connected: opened,
            })
        })
    }
}

/// Opens `n` connections, `lanes` at a time (one: one after another; a burst of thousands
/// of simultaneous connects would only measure the server's SYN queue), each made ready
/// by `open` (a TLS handshake) within the connect time limit. Fails if none opens.
async fn connect_all<W, F>(
    addr: SocketAddr,
    n: usize,
    target: &str,
    send_proxy: Option<SendProxy>,
    quiet: bool,
    lanes: usize,
    open: impl Fn(TcpStream) -> F + 'static,
) -> io::Result<Vec<W>>
where
    W: 'static,
    F: Future<Output = io::Result<W>> + 'static,
{
    let open = Rc::new(open);
    let started = Rc::new(Cell::new(0));
    let lanes: Vec<_> = (0..lanes.clamp(1, n.max(1)))
        .map(|_| {
            let (open, started) = (Rc::clone(&open), Rc::clone(&started));
            coop::spawn(async move {
                let mut streams = Vec::new();
                let mut first_error = None;
                while started.get() < n {
                    started.set(started.get() + 1);
                    let ready = async {
                        let stream = TcpStream::connect(addr).await?;
                        stream.set_nodelay(true)?;
                        if let Some(version) = send_proxy {
                            proxy::send_header(&stream, version).await?;
                        }
                        open(stream).await
                    };
                    match timeout(Duration::from_secs(10), ready).await {
                        Ok(Ok(stream)) => streams.push(stream),
                        Ok(Err(e)) => {
                            first_error.get_or_insert(e);
                        }
                        Err(elapsed) => {
                            first_error.get_or_insert(elapsed.into());
                        }
                    }
                }
                (streams, first_error)
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(n);
    let mut first_error = None;
    for lane in lanes {
        let (opened, failed) = lane
            .await
            .unwrap_or_else(|e| (Vec::new(), Some(io::Error::other(e.to_string()))));
        streams.extend(opened);
        if let Some(e) = failed {
            first_error.get_or_insert(e);
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
async fn drive(id: usize, mut wire: impl Wire, load: Rc<Load>) {
    if let Err(e) = exchange(id, &mut wire, &load).await {
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

async fn exchange(id: usize, wire: &mut impl Wire, load: &Load) -> io::Result<()> {
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
        if wire.queued() {
            wire.push()?;
        }

        // Take in what has arrived.
        SCRATCH.with_borrow_mut(|buf| {
            let n = match wire.try_read(buf) {
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
                    mismatch_message(m.message, &buf[..n], load),
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
            match wire.try_write_vectored(&load.tape.slices(cursor, from)) {
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
        let stream = wire.socket();
        let queued = wire.queued();
        std::future::poll_fn(|cx| {
            if stream.poll_read_ready(cx).is_ready()
                || ((partial.is_some() || queued) && stream.poll_write_ready(cx).is_ready())
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

/// What to say of a reply (beginning `reply`) that is not the echo of message `message`.
/// The first reply wrong is most often a server that frames its replies otherwise than
/// bench was told, or one that speaks TLS.
fn mismatch_message(message: u64, reply: &[u8], load: &Load) -> String {
    // A TLS record's header: an alert (21) or a handshake (22), then version 3.x.
    if message == 0 && matches!(reply, [21 | 22, 3, ..]) {
        return "the first reply is a TLS record: the server speaks TLS (give --tls)".to_string();
    }
    let prefix = String::from_utf8_lossy(&load.prefix);
    let framing = match load.framing {
        Framing::Chunk => "chunk",
        Framing::Line => "line",
    };
    if message > 0 {
        // Later replies go wrong when the framing differs only past the first message
        // (e.g. pipelined messages that the server answers as one chunk).
        return format!(
            "the reply to message {message} is not its echo with the prefix {prefix:?} in \
             {framing} framing: check the server's --framing and --prefix"
        );
    }
    format!(
        "the first reply is not the echo of the first message with the prefix {prefix:?} \
         in {framing} framing: give the server's --prefix ('' for a plain echo) and --framing"
    )
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

/// CPU time (user + system) of the calling thread so far.
fn thread_cpu_time() -> Option<Duration> {
    schedstat(std::path::Path::new("/proc/thread-self"))
}

/// The CPU time in `schedstat` under a task's /proc directory.
fn schedstat(task: &std::path::Path) -> Option<Duration> {
    let stat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn part(messages: u64, connected: usize, failed: u64, seconds: f64) -> PartOutcome {
        let mut tally = Tally::new();
        for _ in 0..messages {
            tally.record(Duration::from_micros(100));
        }
        tally.connect_failures = failed;
        if failed > 0 {
            tally.fail("cannot connect to 127.0.0.1:9: refused");
        }
        PartOutcome {
            tally,
            seconds,
            connecting: seconds / 10.0,
            connected,
        }
    }

    /// A thread none of whose share connected is counted, not the end of the run (found
    /// by a review: the whole run failed, the other threads' load thrown away).
    #[test]
    fn a_thread_that_could_not_connect_is_counted_in_the_merged_report() {
        let outcomes = vec![Ok(part(0, 0, 3, 0.0)), Ok(part(500, 3, 0, 2.5))];
        let (tally, seconds, opened_per_sec) = merge(outcomes, 6).unwrap();
        assert_eq!(opened_per_sec, Some(3.0 / 0.25));
        assert_eq!(tally.messages, 500);
        assert_eq!(tally.latency.len(), 500);
        assert_eq!(tally.connect_failures, 3);
        assert_eq!(seconds, 2.5);
        assert!(tally.first_error.unwrap().contains("cannot connect"));
    }

    #[test]
    fn no_connection_at_all_fails_with_the_first_reason() {
        let outcomes = vec![Ok(part(0, 0, 2, 0.0)), Ok(part(0, 0, 2, 0.0))];
        let e = merge(outcomes, 4).unwrap_err();
        assert!(
            e.to_string().contains("cannot connect to 127.0.0.1:9"),
            "{e}"
        );
    }
}
