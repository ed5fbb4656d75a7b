//! The `serve` command as a service: limits, signals, graceful shutdown, stats.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use coop::signal::{SIGINT, SIGTERM, Signals};
use coop::time::{sleep, sleep_until};
use coop::{Server, ServerHandle, TcpListener};

use crate::serve::{self, Settings, Totals};
use crate::{admin, udp};

/// File descriptors kept for the server's own needs (epoll, its timer and signal pipe,
/// the listener, stdio, a margin) when the connection limit is derived from the fd limit.
pub const FD_RESERVE: u64 = 32;

/// How the service runs, besides what each connection needs.
#[derive(Debug)]
pub struct Service {
    /// Where to listen, as given (for messages).
    pub address: String,
    /// What to bind.
    pub host: String,
    /// Port to bind.
    pub port: u16,
    /// What each connection needs.
    pub settings: Settings,
    /// At most this many connections at once; `None`: what the fd limit allows.
    pub max_connections: Option<usize>,
    /// How long open connections may go on after a stop signal.
    pub shutdown_timeout: Duration,
    /// Log a stats line this often.
    pub stats: Option<Duration>,
    /// Print scheduler events.
    pub trace: bool,
    /// Answer UDP too, with this many replies per second per source at most (0: any).
    pub udp: Option<u32>,
    /// Serve metrics here; `true`: even if it is not a loopback address.
    pub admin: Option<(SocketAddr, bool)>,
}

/// Binds, serves until SIGINT or SIGTERM, then stops gracefully. Exit status 0 after a
/// graceful stop; 1 if it cannot start; 128 + the signal's number if a second signal cuts
/// the stop short.
pub fn run(service: Service) -> ExitCode {
    let runtime = match coop::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format_args!("cannot start the runtime: {e}")),
    };
    let outcome = runtime.block_on(serve_until_stopped(service));
    // The connections still open go with the runtime, each with its closing line: the
    // summary that counts them comes after.
    drop(runtime);
    match outcome {
        Ok(stopped) => {
            stopped.log();
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
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

/// Serves until stopped; `Err` holds the exit status when it could not start, or when a
/// second signal cut the stop short.
async fn serve_until_stopped(service: Service) -> Result<Stopped, ExitCode> {
    let Service {
        address,
        host,
        port,
        settings,
        max_connections,
        shutdown_timeout,
        stats,
        trace,
        udp,
        admin,
    } = service;
    if trace {
        // Straight to stderr, one line each: these are for watching, not for logs.
        coop::trace::set_hook(|event| eprintln!("trace: {event}"));
    }
    // Every socket is bound before anything says "Listening": a failure leaves no
    // misleading line behind.
    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(listener) => listener,
        Err(e) => return Err(fail(format_args!("cannot listen on {address}: {e}"))),
    };
    let bound: SocketAddr = match listener.local_addr() {
        Ok(bound) => bound,
        Err(e) => return Err(fail(format_args!("cannot listen on {address}: {e}"))),
    };
    let udp_socket = match udp {
        Some(rate) => match coop::UdpSocket::bind((host.as_str(), bound.port())) {
            Ok(socket) => Some((socket, rate)),
            Err(e) => return Err(fail(format_args!("cannot listen on {bound} (udp): {e}"))),
        },
        None => None,
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

    let limit = max_connections.unwrap_or_else(default_max_connections);
    let server = Server::new(listener).max_connections(limit);
    let settings = Rc::new(settings);
    let handle = server.handle();
    let handler_settings = Rc::clone(&settings);
    let serving = coop::spawn_named(
        "accept",
        server.serve(move |stream, peer| serve::handle(stream, peer, Rc::clone(&handler_settings))),
    );
    tracing::info!("Listening on {bound}");
    tracing::debug!("at most {} at once", count(limit as u64, "connection"));
    if let Some((socket, rate)) = udp_socket {
        tracing::info!("Listening on {bound} (udp)");
        let limiter = (rate > 0).then(|| udp::Limiter::new(rate));
        drop(coop::spawn_named(
            "udp",
            udp::serve(socket, Rc::clone(&settings), limiter),
        ));
    }
    if let Some((admin_bound, listener)) = admin_listener {
        tracing::info!("Metrics at http://{admin_bound}/metrics");
        let rate = Rc::new(std::cell::Cell::new(0.0));
        drop(coop::spawn_named(
            "metrics rate",
            admin::sample_rate(Rc::clone(&settings), Rc::clone(&rate)),
        ));
        let sources = Rc::new(admin::Sources {
            server: handle.clone(),
            settings: Rc::clone(&settings),
            rate,
            udp: udp.is_some(),
        });
        drop(coop::spawn_named("admin", admin::serve(listener, sources)));
    }
    if let Some(every) = stats {
        drop(coop::spawn_named(
            "stats",
            report_stats(every, handle.clone(), Rc::clone(&settings)),
        ));
    }

    let first = match signals.recv().await {
        Ok(signal) => signal,
        Err(e) => return Err(fail(format_args!("cannot wait for signals: {e}"))),
    };
    handle.stop();
    // The listener is closed once the accept loop returns: new clients are refused.
    if let Err(e) = serving.await {
        tracing::error!("the accept loop ended: {e}");
    }
    let open = handle.open_connections() as u64;
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
    let drained = handle.drained();
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
        return Err(ExitCode::from(128 + signal as u8));
    }
    let totals = &settings.totals;
    Ok(Stopped {
        served: handle.total_connections(),
        bytes_in: totals.bytes_in.get(),
        bytes_out: totals.bytes_out.get(),
        cut: handle.open_connections() as u64,
    })
}

/// Logs connections and traffic every `every`.
async fn report_stats(every: Duration, handle: ServerHandle, settings: Rc<Settings>) {
    let totals: &Totals = &settings.totals;
    let mut last = (Instant::now(), totals.messages.get());
    let mut next = last.0 + every;
    loop {
        sleep_until(next).await;
        let now = Instant::now();
        let messages = totals.messages.get();
        let rate = (messages - last.1) as f64 / (now - last.0).as_secs_f64();
        tracing::info!(
            "stats: connections {} open, {} in all; {} bytes in, {} bytes out; {rate:.0} msg/s",
            handle.open_connections(),
            handle.total_connections(),
            totals.bytes_in.get(),
            totals.bytes_out.get(),
        );
        last = (now, messages);
        // Behind (the process was stopped, or the system busy)? Skip, don't catch up.
        next = (next + every).max(now + every / 2);
    }
}

/// Raises the soft fd limit to the hard one (what a server that holds many connections
/// needs), and allows that many connections less a reserve.
fn default_max_connections() -> usize {
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
    usize::try_from(fds.saturating_sub(FD_RESERVE).max(1)).unwrap_or(usize::MAX)
}

/// `1 connection`, `2 connections`.
pub(crate) fn count(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
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

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular() {
        assert_eq!(count(0, "connection"), "0 connections");
        assert_eq!(count(1, "connection"), "1 connection");
        assert_eq!(count(2, "open connection"), "2 open connections");
    }
}
