//! One serving thread of `coop-echo serve`: a runtime of its own, with its own listener
//! (and UDP socket) on the shared port, its own connections and counters.
//!
//! Nothing here is shared with the other threads on the message path: the counters are
//! plain cells that only this thread writes. The control (signals, metrics, stats: tasks
//! on thread 0, the program's main thread) reads them by asking: a [`coop::Remote`]
//! starts one of the `pub async fn`s below on this thread, and its reply crosses back.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coop::{Handler, JoinHandle, Server, ServerHandle, SharedLimit, TcpListener, UdpSocket};

use crate::echo::Framing;
use crate::fault;
use crate::http;
use crate::per_source::PerSource;
use crate::refused;
use crate::serve::{self, Settings, Totals};
use crate::snapshot::Snapshot;
use crate::socket_file::SocketFile;
use crate::tls_echo::{self, Tls};
use crate::udp;

/// What a serving thread is given: everything `Send`, turned into its own `Rc`s there.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bytes put in front of each reply.
    pub prefix: Arc<[u8]>,
    /// Where the prefix goes.
    pub framing: Framing,
    /// No `Connection from` / `Connection closed` lines.
    pub quiet: bool,
    /// Close a connection whose client has sent nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// Every connection begins with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// Speak TLS.
    pub tls: Option<Tls>,
    /// How many connections may be open at once.
    pub limit: Limit,
    /// How many may be open at once from one client address, across threads.
    pub per_source: Option<PerSource>,
    /// Print scheduler events, naming the thread (`Some(index)`) if there are several.
    pub trace: Option<Option<usize>>,
    /// Answer UDP with at most this many replies per second per source (0: any).
    pub udp_rate: Option<u32>,
    /// Set before a stop that must not wait (a second signal): no goodbyes.
    pub hurry: Arc<AtomicBool>,
    /// Serve HTTP and WebSocket too (`--http`), on a listener of this thread's.
    pub http: Option<http::Config>,
    /// The faults in force, when there may be some (`--fault`, or an admin address that
    /// can set them): `None`, and no connection looks for faults.
    pub faults: Option<Arc<fault::Table>>,
}

/// The connection limit: this thread's alone, or shared by every thread.
#[derive(Debug, Clone)]
pub enum Limit {
    /// One thread: a plain count.
    Alone(usize),
    /// Several: a total across them.
    Shared(SharedLimit),
}

/// What a serving thread listens on, bound before it starts.
#[derive(Debug)]
pub struct Sockets {
    /// The seed's TCP port (the thread's own listener on it).
    pub tcp: std::net::TcpListener,
    /// UDP on the same port (`--udp`).
    pub udp: Option<std::net::UdpSocket>,
    /// The Unix socket and its file (`--unix`, thread 0 only).
    pub unix: Option<(std::os::unix::net::UnixListener, SocketFile)>,
    /// The HTTP listener (`--http`).
    pub http: Option<std::net::TcpListener>,
}

/// The thread's server, for the requests the control sends.
struct Worker {
    server: ServerHandle,
    settings: Rc<Settings>,
    /// The accept loop, until it is told to stop.
    accepting: RefCell<Option<JoinHandle<()>>>,
    /// The Unix socket's accept loop (`--unix`, thread 0), until it is told to stop.
    unix_accepting: RefCell<Option<JoinHandle<()>>>,
    /// The HTTP listener's server (`--http`), and its accept loop until it is told to stop.
    http: Option<(ServerHandle, RefCell<Option<JoinHandle<()>>>)>,
    /// The HTTP connections' figures.
    http_totals: Rc<http::Totals>,
}

/// How long, at a stop, TLS connections have to send their close_notify.
const TLS_GOODBYE: Duration = Duration::from_secs(1);

thread_local! {
    static WORKER: RefCell<Option<Rc<Worker>>> = const { RefCell::new(None) };
}

fn current() -> Option<Rc<Worker>> {
    WORKER.with_borrow(Clone::clone)
}

/// Serves `listener` (and `udp`) until the control asks this runtime to stop;
/// returns the thread's last figures (its `open` connections are those the stop cuts).
pub async fn run(index: usize, sockets: Sockets, config: Config) -> Snapshot {
    let Sockets {
        tcp: listener,
        udp,
        unix,
        http: http_listener,
    } = sockets;
    if let Some(name) = config.trace {
        // Straight to stderr, one line each: these are for watching, not for logs.
        match name {
            Some(index) => coop::trace::set_hook(move |e| eprintln!("trace: thread {index}: {e}")),
            None => coop::trace::set_hook(|e| eprintln!("trace: {e}")),
        }
    }
    let sockets = TcpListener::from_std(listener).and_then(|l| {
        Ok((
            l,
            udp.map(UdpSocket::from_std).transpose()?,
            http_listener.map(TcpListener::from_std).transpose()?,
        ))
    });
    let (listener, udp_socket, http_listener) = match sockets {
        Ok(sockets) => sockets,
        Err(e) => {
            // Only the OS poll can refuse (out of memory, or of epoll watches).
            tracing::error!("thread {index} cannot serve: {e}");
            coop::stop_requested().await;
            return Snapshot::default();
        }
    };
    let settings = Rc::new(Settings {
        prefix: Rc::from(&*config.prefix),
        framing: config.framing,
        quiet: config.quiet,
        idle_timeout: config.idle_timeout,
        proxy_protocol: config.proxy_protocol,
        per_source: config.per_source.clone(),
        totals: Totals::default(),
    });
    let limited = |listener| match &config.limit {
        Limit::Alone(max) => Server::new(listener).max_connections(*max),
        Limit::Shared(limit) => Server::new(listener).shared_limit(limit.clone()),
    };
    let server = limited(listener);
    let http_totals = Rc::new(http::Totals::default());
    let http = match (http_listener, config.http) {
        (Some(listener), Some(http_config)) => {
            let server = limited(listener);
            let (head_time, body_time) = http::Shared::limits(config.idle_timeout);
            let shared = Rc::new(http::Shared {
                head_time,
                body_time,
                config: http_config,
                thread: index,
                server: server.handle(),
                totals: Rc::clone(&http_totals),
                faults: config.faults.clone(),
                idle_timeout: config.idle_timeout,
            });
            let handle = server.handle();
            let settings = Rc::clone(&settings);
            let accepting = coop::spawn_named(
                "http accept",
                server.serve(move |stream, peer: SocketAddr| {
                    http::handle(stream, peer, Rc::clone(&settings), Rc::clone(&shared))
                }),
            );
            Some((handle, RefCell::new(Some(accepting))))
        }
        _ => None,
    };
    let handle = server.handle();
    let handler_settings = Rc::clone(&settings);
    // One accept loop or the other: the plain one's handler has no TLS in it. A
    // connection drawn for faults (at accept) is answered by the faults' handler, as a
    // task of its own type: the echo's task is what it was, sized and polled alike.
    let speaks_tls = config.tls.is_some();
    let faults = config.faults.clone();
    let accepting = match config.tls {
        None => coop::spawn_named(
            "accept",
            server.serve_either(move |stream, peer: SocketAddr| {
                let settings = Rc::clone(&handler_settings);
                match draw(&faults) {
                    Some((table, plan)) => Handler::Boxed(fault::tcp::answer(
                        stream, peer, settings, None, plan, table,
                    )),
                    None => Handler::Inline(serve::handle(stream, peer, settings)),
                }
            }),
        ),
        Some(tls) => {
            let tls = Rc::new(tls);
            coop::spawn_named(
                "accept",
                server.serve_either(move |stream, peer: SocketAddr| {
                    let settings = Rc::clone(&handler_settings);
                    let tls = Rc::clone(&tls);
                    match draw(&faults) {
                        Some((table, plan)) => Handler::Boxed(fault::tcp::answer(
                            stream,
                            peer,
                            settings,
                            Some(tls),
                            plan,
                            table,
                        )),
                        None => Handler::Inline(tls_echo::handle(stream, peer, settings, tls)),
                    }
                }),
            )
        }
    };
    if let Some(socket) = udp_socket {
        let rate = config.udp_rate.unwrap_or(0);
        let limiter = (rate > 0).then(|| udp::Limiter::new(rate));
        drop(coop::spawn_named(
            "udp",
            udp::serve(socket, Rc::clone(&settings), limiter, config.faults.clone()),
        ));
    }
    // The socket file goes when this returns (or is dropped with the runtime).
    let (unix_accepting, _socket_file) = match unix {
        Some((listener, file)) => match coop::net::UnixListener::from_std(listener) {
            Ok(listener) => {
                let path: Rc<str> = Rc::from(
                    listener
                        .local_addr()
                        .ok()
                        .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                        .unwrap_or_default(),
                );
                let accepting = coop::spawn_named(
                    "unix accept",
                    serve::run_unix(listener, path, Rc::clone(&settings)),
                );
                (Some(accepting), Some(file))
            }
            Err(e) => {
                tracing::error!("thread {index} cannot serve the Unix socket: {e}");
                (None, Some(file))
            }
        },
        None => (None, None),
    };
    WORKER.set(Some(Rc::new(Worker {
        server: handle,
        settings,
        accepting: RefCell::new(Some(accepting)),
        unix_accepting: RefCell::new(unix_accepting),
        http,
        http_totals,
    })));
    coop::stop_requested().await;
    let last = snapshot();
    let goodbyes = speaks_tls || current().is_some_and(|w| w.http.is_some());
    if goodbyes && !config.hurry.load(Ordering::Relaxed) {
        // Each TLS connection still open sends its close_notify as it sees the stop, and
        // each WebSocket its close frame: a moment for them, bounded (a client that takes
        // nothing must not hold the exit).
        let _ = coop::time::timeout(TLS_GOODBYE, drained()).await;
    }
    // Refusals held back for a summary not yet due: said now, or never.
    refused::summarise_now();
    // The connections still open go with the runtime, after this returns.
    WORKER.set(None);
    last
}

/// The faults of a connection accepted now, if faults may be in force and it is drawn
/// for some.
fn draw(faults: &Option<Arc<fault::Table>>) -> Option<(Arc<fault::Table>, fault::Plan)> {
    let table = faults.as_ref()?;
    let plan = table.draw()?;
    Some((Arc::clone(table), plan))
}

/// Stops accepting (the listener closes: the kernel sends this thread no more clients)
/// and returns how many connections are still open here.
pub async fn stop_accepting() -> u64 {
    let Some(worker) = current() else { return 0 };
    worker.server.stop();
    // The Unix socket's clients are not waited for: they go with the runtime.
    if let Some(unix) = worker.unix_accepting.borrow_mut().take() {
        unix.abort();
    }
    if let Some((server, _)) = &worker.http {
        server.stop();
    }
    let accepting = worker.accepting.borrow_mut().take();
    let http_accepting = worker
        .http
        .as_ref()
        .and_then(|(_, a)| a.borrow_mut().take());
    for accepting in [accepting, http_accepting].into_iter().flatten() {
        if let Err(e) = accepting.await {
            tracing::error!("the accept loop ended: {e}");
        }
    }
    open_connections(&worker)
}

/// Connections open on this thread: the TCP port's and the HTTP listener's.
fn open_connections(worker: &Worker) -> u64 {
    let http = worker
        .http
        .as_ref()
        .map_or(0, |(server, _)| server.open_connections());
    (worker.server.open_connections() + http) as u64
}

/// Waits until no connection is open on this thread.
pub async fn drained() {
    if let Some(worker) = current() {
        worker.server.drained().await;
        if let Some((server, _)) = &worker.http {
            server.drained().await;
        }
    }
}

/// This thread's figures now.
pub fn snapshot() -> Snapshot {
    let Some(worker) = current() else {
        return Snapshot::default();
    };
    let totals = &worker.settings.totals;
    let stats = coop::stats();
    let stat = |f: fn(&coop::Stats) -> usize| stats.as_ref().map_or(0, |s| f(s) as u64);
    Snapshot {
        open: open_connections(&worker),
        total: worker.server.total_connections()
            + worker
                .http
                .as_ref()
                .map_or(0, |(server, _)| server.total_connections()),
        bytes_in: totals.bytes_in.get(),
        bytes_out: totals.bytes_out.get(),
        messages: totals.messages.get(),
        udp_in: totals.udp_in.get(),
        udp_out: totals.udp_out.get(),
        udp_refused: totals.udp_refused.get(),
        tasks: stat(|s| s.tasks),
        ready: stat(|s| s.ready),
        parked_read: stat(|s| s.parked_read),
        parked_write: stat(|s| s.parked_write),
        sockets: stat(|s| s.sockets),
        timers: stat(|s| s.timers),
        http: http::Snapshot::of(&worker.http_totals),
        refused: refused::counts(),
    }
}

/// Every thread's figures, in thread order: a request to each, all in flight at once. A
/// thread that is gone counts as zeros.
pub async fn gather(remotes: &[coop::Remote]) -> Vec<Snapshot> {
    let asked: Vec<_> = remotes
        .iter()
        .map(|remote| remote.spawn(|| async { snapshot() }))
        .collect();
    let mut snapshots = Vec::with_capacity(asked.len());
    for reply in asked {
        snapshots.push(reply.await.unwrap_or_default());
    }
    snapshots
}
