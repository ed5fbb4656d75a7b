//! The `serve` command as a service: threads, limits, signals, graceful shutdown, stats.

use std::cell::Cell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::{Duration, Instant};

use coop::signal::{SIGINT, SIGTERM, Signals};
use coop::threads::Threads;
use coop::time::{sleep, sleep_until};

use coop::{Remote, SharedLimit, TcpListener};

use crate::admin;
// Also named from here by the client, which says how many lines got no reply.
use crate::plural::count;
use crate::snapshot::Snapshot;
use crate::socket_file;
use crate::worker;

/// File descriptors kept for the server's own needs (epoll, its timer and signal pipe,
/// the listener, stdio, a margin) when the connection limit is derived from the fd limit.
pub const FD_RESERVE: u64 = 32;

/// File descriptors each serving thread beyond the first keeps for itself (its epoll,
/// eventfd, timerfd, listener and UDP socket, and a margin).
pub const FD_RESERVE_PER_THREAD: u64 = 8;

/// How the service runs.
#[derive(Debug)]
pub struct Service {
    /// Where to listen, as given (for messages).
    pub address: String,
    /// What to bind.
    pub host: String,
    /// Port to bind.
    pub port: u16,
    /// Serving threads, each with its own runtime and listener (at least 1).
    pub threads: usize,
    /// Pin serving thread i to the i-th allowed CPU.
    pub pin_threads: bool,
    /// What each connection needs (its `limit` and `trace` are set here, from
    /// `max_connections` and `trace`).
    pub config: worker::Config,
    /// Also serve on a Unix socket at this path (on thread 0).
    pub unix: Option<std::path::PathBuf>,
    /// At most this many connections at once, across threads; `None`: what the fd limit
    /// allows.
    pub max_connections: Option<usize>,
    /// After a stop signal, how long to go on accepting (with `/healthz` saying 503),
    /// before the stop proper.
    pub shutdown_delay: Duration,
    /// Each connection's kernel send buffer, in bytes (`SO_SNDBUF`, set on the listeners
    /// and inherited by what they accept); `None`: the kernel's autotuning.
    pub send_buffer: Option<usize>,
    /// How long open connections may go on once the server stops accepting.
    pub shutdown_timeout: Duration,
    /// Log a stats line this often.
    pub stats: Option<Duration>,
    /// Print scheduler events.
    pub trace: bool,
    /// Serve metrics here; `true`: even if it is not a loopback address.
    pub admin: Option<(SocketAddr, bool)>,
    /// Serve HTTP, HTTP/2 and WebSocket here too (`config.http` says how).
    pub http: Option<SocketAddr>,
}

/// Binds, serves until SIGINT or SIGTERM, then stops gracefully. Exit status 0 after a
/// graceful stop; 1 if it cannot start (or a serving thread failed); 128 + the signal's
/// number if a second signal cuts the stop short.
///
/// This thread is serving thread 0, and the control: it catches the signals, serves the
/// metrics and logs the stats, and asks every serving thread ([`worker`], one runtime
/// each, itself included) for its figures, and to stop. With one thread, the process has
/// no other (the kernel's file table then needs no atomic per system call).
pub fn run(service: Service) -> ExitCode {
    let runtime = match coop::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format_args!("cannot start the runtime: {e}")),
    };
    let (threads, first, ending) = match runtime.block_on(control(service)) {
        Ok(running) => running,
        Err(code) => return code,
    };
    // The connections still open go with each thread's runtime, each with its closing
    // line: the summary that counts them comes after.
    drop(runtime);
    threads.stop();
    // A serving thread that failed (a bug) makes the exit status 1.
    let mut panicked = first.is_none();
    let mut last: Vec<Snapshot> = first.into_iter().collect();
    for (index, outcome) in (1..).zip(threads.join()) {
        match outcome {
            Ok(snapshot) => last.push(snapshot),
            Err(_) => {
                tracing::error!("serving thread {index} panicked");
                panicked = true;
            }
        }
    }
    match ending {
        Ending::Graceful => {
            let total = Snapshot::sum(&last);
            Stopped {
                served: total.total,
                bytes_in: total.bytes_in,
                bytes_out: total.bytes_out,
                cut: total.open,
            }
            .log();
            if panicked {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Ending::CutShort(signal) => ExitCode::from(128 + signal as u8),
        Ending::Failed => ExitCode::FAILURE,
    }
}

/// How the serving ended.
enum Ending {
    /// Stopped gracefully: drained, or the shutdown deadline passed.
    Graceful,
    /// A second signal came during the stop.
    CutShort(i32),
    /// The signals could not be waited for.
    Failed,
}

/// What a graceful stop sums up.
struct Stopped {
    served: u64,
    bytes_in: u64,
    bytes_out: u64,
    /// Connections still open at the deadline, closed with the runtime.
    cut: u64,
}

impl Stopped {
    fn log(&self) {
        let Stopped {
            served,
            bytes_in,
            bytes_out,
            cut,
        } = *self;
        let served = count(served, "connection");
        if cut == 0 {
            tracing::info!("Stopped: {served} served, {bytes_in} bytes in, {bytes_out} bytes out");
        } else {
            tracing::info!(
                "Stopped: {served} served, {bytes_in} bytes in, {bytes_out} bytes out; {} closed at the deadline",
                count(cut, "connection")
            );
        }
    }
}

/// What the control returns: the other serving threads, still running (the caller stops
/// and joins them), this thread's last figures (`None` if its serving task failed), and
/// how the serving ended.
type Served = (Threads<Snapshot>, Option<Snapshot>, Ending);

/// Binds, starts the serving threads (this one the first), and runs until stopped;
/// `Err` holds the exit status when it could not start.
async fn control(service: Service) -> Result<Served, ExitCode> {
    let Service {
        address,
        host,
        port,
        threads,
        pin_threads,
        mut config,
        unix,
        max_connections,
        shutdown_delay,
        send_buffer,
        shutdown_timeout,
        stats,
        trace,
        admin,
        http,
    } = service;
    let threads = threads.max(1);
    // Every socket is bound before anything says "Listening": a failure leaves no
    // misleading line behind.
    let listeners = match coop::net::bind_reuse_port((host.as_str(), port), threads) {
        Ok(listeners) => listeners,
        Err(e) => return Err(fail(format_args!("cannot listen on {address}: {e}"))),
    };
    let bound: SocketAddr = match listeners[0].local_addr() {
        Ok(bound) => bound,
        Err(e) => return Err(fail(format_args!("cannot listen on {address}: {e}"))),
    };
    let udp_sockets: Vec<Option<std::net::UdpSocket>> = match config.udp_rate {
        Some(_) => match coop::net::bind_udp_reuse_port((host.as_str(), bound.port()), threads) {
            Ok(sockets) => sockets.into_iter().map(Some).collect(),
            Err(e) => return Err(fail(format_args!("cannot listen on {bound} (udp): {e}"))),
        },
        None => (0..threads).map(|_| None).collect(),
    };
    let http_listeners: Vec<Option<std::net::TcpListener>> = match http {
        Some(addr) => match coop::net::bind_reuse_port(addr, threads) {
            Ok(listeners) => listeners.into_iter().map(Some).collect(),
            Err(e) => return Err(fail(format_args!("cannot listen on {addr} (http): {e}"))),
        },
        None => (0..threads).map(|_| None).collect(),
    };
    if let Some(bytes) = send_buffer {
        let mut every = listeners.iter().chain(http_listeners.iter().flatten());
        if let Err(e) =
            every.try_for_each(|l| rustix::net::sockopt::set_socket_send_buffer_size(l, bytes))
        {
            return Err(fail(format_args!("cannot set --send-buffer {bytes}: {e}")));
        }
    }
    let http_bound = match http_listeners.first().and_then(Option::as_ref) {
        Some(listener) => match listener.local_addr() {
            Ok(bound) => Some(bound),
            Err(e) => return Err(fail(format_args!("cannot listen on http: {e}"))),
        },
        None => None,
    };
    if let (Some(http_config), Some(http_bound)) = (&mut config.http, http_bound) {
        let scheme = if http_config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut listening = vec![format!("tcp://{bound}"), format!("{scheme}://{http_bound}")];
        if config.udp_rate.is_some() {
            listening.push(format!("udp://{bound}"));
        }
        http_config.listening = listening.into();
    }
    let unix_path = unix.as_ref().map(|path| path.display().to_string());
    let unix = match unix.as_deref().map(socket_file::bind).transpose() {
        Ok(unix) => unix,
        Err(line) => return Err(fail(format_args!("{line}"))),
    };
    let admin_listener = match admin {
        Some((addr, public)) => {
            if !addr.ip().is_loopback() && !public {
                return Err(fail(format_args!(
                    "--admin {addr} is not a loopback address: add --admin-public to serve metrics beyond this machine"
                )));
            }
            match TcpListener::bind(addr).and_then(|l| Ok((l.local_addr()?, l))) {
                Ok(bound) => Some(bound),
                Err(e) => return Err(fail(format_args!("cannot listen on {addr} (admin): {e}"))),
            }
        }
        None => None,
    };
    let signals = match Signals::new(&[SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(e) => return Err(fail(format_args!("cannot catch SIGINT and SIGTERM: {e}"))),
    };

    let limit = max_connections.unwrap_or_else(|| default_max_connections(threads));
    // One count for the TCP port's connections and the HTTP listener's.
    config.limit = if threads == 1 && http_bound.is_none() {
        worker::Limit::Alone(limit)
    } else {
        worker::Limit::Shared(SharedLimit::new(limit))
    };
    let udp = config.udp_rate.is_some();
    let mut configs = (0..threads).map(|index| {
        let mut config = config.clone();
        config.trace = trace.then_some((threads > 1).then_some(index));
        config
    });
    let mut listeners = listeners.into_iter();
    let mut udp_sockets = udp_sockets.into_iter();
    let mut http_listeners = http_listeners.into_iter();
    let (Some(listener), Some(udp_socket), Some(http_listener), Some(first_config)) = (
        listeners.next(),
        udp_sockets.next(),
        http_listeners.next(),
        configs.next(),
    ) else {
        return Err(fail(format_args!("cannot listen on {address}: no socket")));
    };
    let factories = (1..)
        .zip(listeners.zip(udp_sockets).zip(http_listeners).zip(configs))
        .map(|(index, (((listener, udp), http), config))| {
            let sockets = worker::Sockets {
                tcp: listener,
                udp,
                unix: None,
                http,
            };
            move || worker::run(index, sockets, config)
        });
    let builder = coop::threads::Builder::new()
        .name("serve")
        .number_from(1)
        .pin_to_cpus(pin_threads);
    let serving = match builder.spawn(factories) {
        Ok(serving) => serving,
        Err(e) => return Err(fail(format_args!("cannot start the serving threads: {e}"))),
    };
    if pin_threads {
        // After the others started: they would have inherited this one CPU.
        if let Err(e) = coop::threads::pin_to_cpu(0) {
            return Err(fail(format_args!("cannot pin the serving threads: {e}")));
        }
    }
    let serving_here = coop::spawn_named(
        "serve",
        worker::run(
            0,
            worker::Sockets {
                tcp: listener,
                udp: udp_socket,
                unix,
                http: http_listener,
            },
            first_config,
        ),
    );
    let remotes: Rc<[Remote]> = std::iter::once(coop::remote())
        .chain((0..serving.len()).filter_map(|index| serving.remote(index).cloned()))
        .collect();
    tracing::info!("Listening on {bound}");
    if threads > 1 {
        tracing::info!("Serving on {threads} threads, each with its own runtime and listener");
    }
    tracing::debug!("at most {} at once", count(limit as u64, "connection"));
    if udp {
        tracing::info!("Listening on {bound} (udp)");
    }
    if let Some(path) = unix_path {
        tracing::info!("Listening on {path} (unix)");
    }
    if let Some(http_bound) = http_bound {
        let scheme = if config.http.as_ref().is_some_and(|h| h.tls.is_some()) {
            "https"
        } else {
            "http"
        };
        tracing::info!("Listening on {scheme}://{http_bound} (HTTP/1.1, HTTP/2, WebSocket)");
    }
    let stopping = Rc::new(Cell::new(false));
    if let Some((admin_bound, listener)) = admin_listener {
        tracing::info!("Metrics at http://{admin_bound}/metrics");
        let rate = Rc::new(Cell::new(0.0));
        let gather = {
            let remotes = Rc::clone(&remotes);
            Rc::new(admin::Gather(Box::new(move || {
                let remotes = Rc::clone(&remotes);
                Box::pin(async move { worker::gather(&remotes).await })
            })))
        };
        drop(coop::spawn_named(
            "metrics rate",
            admin::sample_rate(Rc::clone(&gather), Rc::clone(&rate)),
        ));
        let sources = Rc::new(admin::Sources {
            gather,
            stopping: Rc::clone(&stopping),
            rate,
            udp,
            http: http_bound.is_some(),
            faults: config.faults.clone(),
            failing: Cell::new(false),
        });
        drop(coop::spawn_named("admin", admin::serve(listener, sources)));
    }
    if let Some(every) = stats {
        drop(coop::spawn_named(
            "stats",
            report_stats(every, Rc::clone(&remotes)),
        ));
    }

    let first = match signals.recv().await {
        Ok(signal) => signal,
        Err(e) => {
            tracing::error!("cannot wait for signals: {e}");
            return Ok(finish(serving, serving_here, &remotes, Ending::Failed).await);
        }
    };
    stopping.set(true);
    if !shutdown_delay.is_zero() {
        // `/healthz` says 503 from now on: load balancers and orchestrators send no one
        // new, and whoever they send meanwhile is still served, not refused.
        tracing::info!(
            "{}: still accepting for {} s (--shutdown-delay), then stopping",
            signal_name(first),
            shutdown_delay.as_secs_f64()
        );
        if let Some(signal) = delayed(&signals, shutdown_delay).await {
            tracing::info!("{}: the shutdown delay cut short", signal_name(signal));
        }
    }
    // Every thread closes its listener (new clients are refused) and says how many of
    // its connections are still open.
    let asked: Vec<_> = remotes
        .iter()
        .map(|remote| remote.spawn(worker::stop_accepting))
        .collect();
    let mut open = 0;
    for reply in asked {
        open += reply.await.unwrap_or(0);
    }
    if open == 0 {
        tracing::info!(
            "{}: stopped accepting; no connection open",
            signal_name(first)
        );
    } else {
        tracing::info!(
            "{}: stopped accepting; waiting up to {} s for {} to finish",
            signal_name(first),
            shutdown_timeout.as_secs_f64(),
            count(open, "open connection")
        );
    }

    let deadline = sleep(shutdown_timeout);
    let drained = drained(&remotes);
    let second = signals.recv();
    let mut deadline = std::pin::pin!(deadline);
    let mut drained = std::pin::pin!(drained);
    let mut second = std::pin::pin!(second);
    let cut_short = std::future::poll_fn(|cx| {
        if let Poll::Ready(signal) = second.as_mut().poll(cx) {
            return Poll::Ready(signal.ok());
        }
        if drained.as_mut().poll(cx).is_ready() || deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await;
    if let Some(signal) = cut_short {
        tracing::warn!("{}: exiting at once", signal_name(signal));
        // Before the stops: no thread waits for its TLS goodbyes.
        config.hurry.store(true, Ordering::Relaxed);
        return Ok(finish(serving, serving_here, &remotes, Ending::CutShort(signal)).await);
    }
    Ok(finish(serving, serving_here, &remotes, Ending::Graceful).await)
}

/// Waits `delay`, or until a signal comes (which it returns: it cuts the delay short, so
/// that a second signal means "stop now" as it does without a delay). A signal pipe
/// that fails ends the delay too: the stop goes on without it.
async fn delayed(signals: &Signals, delay: Duration) -> Option<i32> {
    let mut delay = std::pin::pin!(sleep(delay));
    let mut signal = std::pin::pin!(signals.recv());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(signal) = signal.as_mut().poll(cx) {
            return Poll::Ready(signal.ok());
        }
        delay.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// Tells every serving thread to stop, and takes this one's last figures.
async fn finish(
    serving: Threads<Snapshot>,
    here: coop::JoinHandle<Snapshot>,
    remotes: &[Remote],
    ending: Ending,
) -> Served {
    for remote in remotes {
        remote.stop();
    }
    let last = match here.await {
        Ok(last) => Some(last),
        Err(e) => {
            tracing::error!("serving thread 0 ended: {e}");
            None
        }
    };
    (serving, last, ending)
}

/// Waits until every thread's connections have ended.
async fn drained(remotes: &[Remote]) {
    let asked: Vec<_> = remotes
        .iter()
        .map(|remote| remote.spawn(worker::drained))
        .collect();
    for reply in asked {
        let _ = reply.await;
    }
}

/// Logs connections and traffic every `every`, summed over the threads.
async fn report_stats(every: Duration, remotes: Rc<[Remote]>) {
    let mut last = (Instant::now(), 0);
    let mut next = last.0 + every;
    loop {
        sleep_until(next).await;
        let now = Instant::now();
        let total = Snapshot::sum(&worker::gather(&remotes).await);
        let rate = total.messages.saturating_sub(last.1) as f64 / (now - last.0).as_secs_f64();
        tracing::info!(
            "stats: connections {} open, {} in all; {} bytes in, {} bytes out; {rate:.0} msg/s",
            total.open,
            total.total,
            total.bytes_in,
            total.bytes_out,
        );
        last = (now, total.messages);
        // Behind (the process was stopped, or the system busy)? Skip, don't catch up.
        next = (next + every).max(now + every / 2);
    }
}

/// Raises the soft fd limit to the hard one (what a server that holds many connections
/// needs), and allows that many connections less a reserve.
fn default_max_connections(threads: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!("cannot raise the fd limit: {e}");
            limit = getrlimit(Resource::Nofile);
        }
    }
    let fds = limit.current.unwrap_or(u64::MAX);
    let reserve = FD_RESERVE + FD_RESERVE_PER_THREAD * (threads as u64 - 1);
    usize::try_from(fds.saturating_sub(reserve).max(1)).unwrap_or(usize::MAX)
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

/// One line on stderr, exit status 1.
pub fn fail(message: std::fmt::Arguments<'_>) -> ExitCode {
    eprintln!("coop-echo: {message}");
    ExitCode::FAILURE
}
