//! `serve --http ADDR`: HTTP/1.1, HTTP/2 and WebSocket echo, beside the seed's TCP port
//! and on the same serving threads.
//!
//! A connection goes the TCP echo's way up to its first byte of HTTP (the PROXY header,
//! the TLS handshake, the connection's log lines), then to hyper: HTTP/2 when the client
//! starts with its preface (h2c, prior knowledge) or chose `h2` by ALPN, HTTP/1.1
//! otherwise. A request that upgrades to WebSocket ends hyper's part: the stream comes
//! back (`websocket.rs`) with what hyper had read past the request, in the same task, so
//! the connection is counted, limited and stopped as one.
//!
//! `routes.rs` answers requests; `body.rs` is what the answers stream; `describe.rs` is the
//! JSON that tells a client what reached the server.

pub mod asked;
mod body;
mod describe;
mod routes;
mod websocket;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use coop::ServerHandle;
use coop::net::TcpStream;
use coop::time::timeout;
use futures_rustls::TlsAcceptor;
use futures_util::io::{AsyncRead, AsyncWrite};
use hyper::server::conn::{http1, http2};
use smol_hyper::rt::FuturesIo;

use crate::serve::{self, Ending, Open, Settings};
use crate::tls::{self, Rewound};
use crate::tls_echo::{self, Tls};

pub use routes::{METHODS, STATUSES};

/// The largest WebSocket message (and frame) by default: what Autobahn's largest cases
/// send (16 MiB).
pub const WS_MAX_MESSAGE: usize = 16 << 20;

/// A request's head (request line and headers) larger than this is answered 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// A client that has not sent a whole request head this long after the connection
/// opened (or the previous response) is let go: the bound on a WebSocket upgrade that
/// never finishes, too.
pub const HEAD_TIME: Duration = Duration::from_secs(10);

/// What every HTTP connection of a server needs: `Send`, made once, shared by threads.
#[derive(Clone)]
pub struct Config {
    /// HTTPS and WSS, with ALPN offering `h2` and `http/1.1`.
    pub tls: Option<Tls>,
    /// A WebSocket message larger than this is refused with close code 1009.
    pub ws_max_message: usize,
    /// The name that says which instance answered (`--instance`, default the host name).
    pub instance: Arc<str>,
    /// The machine's host name.
    pub host: Arc<str>,
    /// Every address the server listens on, for the description.
    pub listening: Arc<[String]>,
    /// What a request whose query names no fault or shape of its own gets
    /// (`--http-defaults`).
    pub defaults: Option<Arc<asked::Asked>>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("tls", &self.tls.is_some())
            .field("ws_max_message", &self.ws_max_message)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Offers `h2` and `http/1.1` by ALPN, on a copy of the TCP port's TLS settings.
    pub fn tls_from(server: &rustls::ServerConfig, handshake_time: Duration) -> Tls {
        let mut config = server.clone();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Tls {
            config: Arc::new(config),
            handshake_time,
        }
    }
}

/// The machine's host name, as `uname` gives it.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// One thread's HTTP figures.
#[derive(Debug, Default)]
pub struct Totals {
    /// Requests answered, by method and status: `[METHODS.len()][STATUSES.len() + 1]`,
    /// the last status column for any other.
    pub requests: RefCell<Counts>,
    /// WebSocket connections open now.
    pub ws_open: Cell<u64>,
    /// WebSocket connections accepted so far.
    pub ws_total: Cell<u64>,
    /// WebSocket messages received (and, as the echo goes, sent).
    pub ws_messages: Cell<u64>,
    /// Body and message bytes received.
    pub bytes_in: Cell<u64>,
    /// Body and message bytes sent.
    pub bytes_out: Cell<u64>,
}

/// Requests by method (row) and status (column), as [`Totals::requests`] counts them.
pub type Counts = [[u64; STATUSES.len() + 1]; METHODS.len()];

/// A thread's HTTP figures, as the control sums and reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Snapshot {
    /// Requests by method and status.
    pub requests: Counts,
    /// WebSocket connections open now.
    pub ws_open: u64,
    /// WebSocket connections accepted so far.
    pub ws_total: u64,
    /// WebSocket messages received (each echoed).
    pub ws_messages: u64,
    /// Body and message bytes received.
    pub bytes_in: u64,
    /// Body and message bytes sent.
    pub bytes_out: u64,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            requests: [[0; STATUSES.len() + 1]; METHODS.len()],
            ws_open: 0,
            ws_total: 0,
            ws_messages: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }
}

impl Snapshot {
    /// This thread's figures now.
    pub fn of(totals: &Totals) -> Snapshot {
        Snapshot {
            requests: *totals.requests.borrow(),
            ws_open: totals.ws_open.get(),
            ws_total: totals.ws_total.get(),
            ws_messages: totals.ws_messages.get(),
            bytes_in: totals.bytes_in.get(),
            bytes_out: totals.bytes_out.get(),
        }
    }

    /// `self` and `other` added up.
    pub fn plus(mut self, other: &Snapshot) -> Snapshot {
        for (row, other_row) in self.requests.iter_mut().zip(&other.requests) {
            for (count, other_count) in row.iter_mut().zip(other_row) {
                *count += other_count;
            }
        }
        self.ws_open += other.ws_open;
        self.ws_total += other.ws_total;
        self.ws_messages += other.ws_messages;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self
    }
}

fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get() + n);
}

/// What a serving thread's HTTP connections share.
#[derive(Debug)]
pub struct Shared {
    /// The server's settings.
    pub config: Config,
    /// The serving thread's index.
    pub thread: usize,
    /// Tells each connection when the server stops accepting.
    pub server: ServerHandle,
    /// The thread's figures.
    pub totals: Rc<Totals>,
    /// A request head must come within this long ([`HEAD_TIME`], or the idle timeout if
    /// shorter).
    pub head_time: Duration,
    /// A body to describe must come within this long (30 s, or the idle
    /// timeout if shorter).
    pub body_time: Duration,
    /// Where the faults a request asks for are counted (with `--fault` or `--admin`);
    /// the faults drawn for each WebSocket.
    pub faults: Option<Arc<crate::fault::Table>>,
    /// `--idle-timeout`: how long a stalled WebSocket (`stall-after`) stays.
    pub idle_timeout: Option<Duration>,
}

impl Shared {
    /// The time limits for a server whose idle timeout is `idle`.
    pub fn limits(idle: Option<Duration>) -> (Duration, Duration) {
        let within = |limit: Duration| idle.map_or(limit, |idle| idle.min(limit));
        (within(HEAD_TIME), within(routes::BODY_TIME))
    }
}

/// The HTTP/2 connection preface, which an h2c client with prior knowledge starts with.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Who the client is and how it came: what the description reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer {
    /// The client (the one a PROXY header names, if any).
    pub client: Option<SocketAddr>,
    /// The address the connection came from, when a PROXY header named another.
    pub via: Option<SocketAddr>,
    /// TLS version, cipher suite, SNI and ALPN, under TLS.
    pub tls: Option<TlsDetails>,
}

/// What the TLS handshake agreed.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsDetails {
    pub version: &'static str,
    pub cipher: String,
    pub sni: Option<String>,
    pub alpn: Option<String>,
}

/// Answers one client of the HTTP listener until it closes (or falls silent, or
/// fails), and logs the end.
pub fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Rc<Settings>,
    shared: Rc<Shared>,
) -> impl Future<Output = ()> {
    // As every log line names it, and so `via` is set only when a header named another.
    let peer = serve::canonical(peer);
    let mut open = Open::new(peer);
    async move {
        let Some((first, check)) = serve::origin(&stream, &mut open, &settings).await else {
            return;
        };
        serve::nodelay(&stream, open.peer);
        let mut who = Peer {
            client: Some(open.peer),
            via: (open.peer != peer).then_some(peer),
            tls: None,
        };
        stream.set_idle_timeout(settings.idle_timeout);
        let outcome = match &shared.config.tls {
            None => {
                let (first, h2) = match protocol(&stream, first).await {
                    Ok(sniffed) => sniffed,
                    Err(e) => {
                        serve::greet(&mut open, &settings, check, Some("http"));
                        open.end(Err(e), check, &settings);
                        return;
                    }
                };
                let over = if h2 { "h2c" } else { "http" };
                serve::greet(&mut open, &settings, check, Some(over));
                match first {
                    // The common case: hyper reads the socket itself, into its own buffer.
                    None => Box::pin(speak(stream, h2, who, &shared)).await,
                    Some(first) => {
                        let io = FuturesIo::new(Rewound::new(first, stream));
                        Box::pin(speak(io, h2, who, &shared)).await
                    }
                }
            }
            Some(tls) => {
                let handshake =
                    TlsAcceptor::from(Arc::clone(&tls.config)).accept(Rewound::new(first, stream));
                let failed = match timeout(tls.handshake_time, handshake).await {
                    Ok(Ok(session)) => Ok(session),
                    Ok(Err(e)) => Err(tls::handshake_failure(&e)),
                    Err(_) => Err(tls_echo::too_slow(tls)),
                };
                let session = match failed {
                    Ok(session) => session,
                    Err(failed) => {
                        tls_echo::failed_handshake(open.peer, check, &failed);
                        return;
                    }
                };
                let state = session.get_ref().1;
                let details = TlsDetails {
                    version: tls::version_name(state.protocol_version()),
                    cipher: state
                        .negotiated_cipher_suite()
                        .map(|suite| format!("{:?}", suite.suite()))
                        .unwrap_or_default(),
                    sni: state.server_name().map(str::to_string),
                    alpn: state
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned()),
                };
                let h2 = details.alpn.as_deref() == Some("h2");
                let over = format!("{}, {}", if h2 { "h2" } else { "https" }, details.version);
                serve::greet(&mut open, &settings, check, Some(&over));
                who.tls = Some(details);
                Box::pin(speak(FuturesIo::new(session), h2, who, &shared)).await
            }
        };
        open.counts.bytes_in = outcome.bytes_in;
        open.counts.bytes_out = outcome.bytes_out;
        open.end(outcome.ending, check, &settings);
    }
}

/// Whether the client speaks HTTP/2 (`true`: it began with the preface) or HTTP/1.1.
/// Looks without taking when it can (`None`: the socket still holds every byte); else
/// (bytes came with a PROXY header, or the preface in pieces) returns what it read, for
/// the protocol's own parser.
async fn protocol(stream: &TcpStream, first: Vec<u8>) -> io::Result<(Option<Vec<u8>>, bool)> {
    if first.is_empty() {
        let mut buf = [0; PREFACE.len()];
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != PREFACE[..n] {
            return Ok((None, false));
        }
        if n == PREFACE.len() {
            return Ok((None, true));
        }
    }
    let (first, h2) = sniff(stream, first).await?;
    Ok((Some(first), h2))
}

/// Reads until the bytes cannot be the HTTP/2 preface, or are it: `true` for HTTP/2.
/// Returns what it read, for the protocol's own parser.
async fn sniff(stream: &TcpStream, mut first: Vec<u8>) -> io::Result<(Vec<u8>, bool)> {
    let mut buf = [0; PREFACE.len()];
    loop {
        let n = first.len().min(PREFACE.len());
        if first[..n] != PREFACE[..n] {
            return Ok((first, false));
        }
        if n == PREFACE.len() {
            return Ok((first, true));
        }
        match stream.read(&mut buf[..PREFACE.len() - n]).await? {
            // Closed before a request: hyper sees the end too, and says nothing of it.
            0 => return Ok((first, false)),
            read => first.extend_from_slice(&buf[..read]),
        }
    }
}

/// How a connection's HTTP ended, with its body and message bytes.
struct Outcome {
    ending: io::Result<Ending>,
    bytes_in: u64,
    bytes_out: u64,
}

/// What hyper serves a connection over, and the stream it gives back for a WebSocket.
trait Transport: hyper::rt::Read + hyper::rt::Write + Unpin + 'static {
    type Stream: AsyncRead + AsyncWrite + Socket + Unpin;
    fn into_stream(self) -> Self::Stream;
    /// The socket under it (for a reset a request asks for).
    fn socket(&self) -> &TcpStream;
}

/// The socket itself: hyper's traits are coop's own (`coop::hyper`).
impl Transport for TcpStream {
    type Stream = TcpStream;
    fn into_stream(self) -> TcpStream {
        self
    }
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// Anything else (TLS, or bytes read already in front), through smol-hyper's adapter.
impl<S: AsyncRead + AsyncWrite + Socket + Unpin + 'static> Transport for FuturesIo<S> {
    type Stream = S;
    fn into_stream(self) -> S {
        self.into_inner()
    }
    fn socket(&self) -> &TcpStream {
        self.get_ref().socket()
    }
}

/// A stream over a socket.
trait Socket {
    fn socket(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl Socket for Rewound<TcpStream> {
    fn socket(&self) -> &TcpStream {
        self.inner()
    }
}

impl Socket for futures_rustls::server::TlsStream<Rewound<TcpStream>> {
    fn socket(&self) -> &TcpStream {
        self.get_ref().0.inner()
    }
}

/// Serves HTTP/2 or HTTP/1.1 on `io` until the client is done, then a WebSocket if a
/// request upgraded to one.
async fn speak<T: Transport>(io: T, h2: bool, who: Peer, shared: &Rc<Shared>) -> Outcome {
    let client = who
        .client
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let counted = Rc::new(routes::Connection::default());
    let routes = routes::Routes::new(Rc::clone(shared), who, h2, Rc::clone(&counted));
    let mut stopped = pin!(shared.server.stopped());
    let ending = if h2 {
        let mut builder = http2::Builder::new(coop::hyper::Executor);
        builder
            .timer(coop::hyper::Timer)
            .max_header_list_size(MAX_HEAD as u32)
            .max_concurrent_streams(100);
        let connection = builder.serve_connection(io, routes);
        let mut connection = pin!(connection);
        let mut told = false;
        let served = std::future::poll_fn(|cx| {
            // A request's `?close=true` too, once its answer is on its way.
            if !told && (counted.close.get() || stopped.as_mut().poll(cx).is_ready()) {
                // GOAWAY: the streams begun go on, no new one is taken.
                told = true;
                connection.as_mut().graceful_shutdown();
            }
            connection.as_mut().poll(cx)
        })
        .await;
        ended(served)
    } else {
        let mut builder = http1::Builder::new();
        builder
            .timer(coop::hyper::Timer)
            .header_read_timeout(shared.head_time)
            .max_buf_size(MAX_HEAD.max(8192) * 4)
            .max_header_size(MAX_HEAD);
        let mut connection = builder.serve_connection(io, routes);
        let mut told = false;
        let served = std::future::poll_fn(|cx| {
            if !told && stopped.as_mut().poll(cx).is_ready() {
                // The next response says `Connection: close`; an idle connection closes.
                told = true;
                std::pin::Pin::new(&mut connection).graceful_shutdown();
            }
            match connection.poll_without_shutdown(cx) {
                // A request asked for a reset (`?reset=true`), and waits for it.
                std::task::Poll::Pending if counted.reset.get() => {
                    std::task::Poll::Ready(Err(None))
                }
                polled => polled.map_err(Some),
            }
        })
        .await;
        // A reset asked for, whether hyper still waited for the answer or saw the client
        // finish meanwhile (a client that half-closes after its request).
        let served = match served {
            Ok(()) if counted.reset.get() => Err(None),
            served => served,
        };
        match served {
            Err(None) => {
                let parts = connection.into_parts();
                // A zero linger: the close when `parts` goes is an RST.
                if let Err(e) = parts.io.socket().set_linger(Some(Duration::ZERO)) {
                    tracing::debug!("SO_LINGER: {e}");
                }
                Err(io::Error::other(
                    "reset, as its request asked (?reset=true)",
                ))
            }
            Ok(()) => {
                let parts = connection.into_parts();
                let mut io = parts.io.into_stream();
                if counted.upgraded.get() {
                    websocket::echo(io, parts.read_buf, &counted, shared, client).await
                } else {
                    tls::close(&mut io).await.map(|()| Ending::Closed)
                }
            }
            Err(Some(e)) => ended(Err(e)),
        }
    };
    Outcome {
        ending,
        bytes_in: counted.bytes_in.get(),
        bytes_out: counted.bytes_out.get(),
    }
}

/// How hyper's serving of a connection ended, as a connection's closing line says it.
fn ended(served: Result<(), hyper::Error>) -> io::Result<Ending> {
    let e = match served {
        Ok(()) => return Ok(Ending::Closed),
        Err(e) => e,
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<io::Error>() {
            return match io.kind() {
                io::ErrorKind::TimedOut => Ok(Ending::Idle),
                kind => Err(io::Error::new(kind, io.to_string())),
            };
        }
        source = error.source();
    }
    if e.is_timeout() {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no whole request head in time",
        ));
    }
    if e.is_incomplete_message() {
        return Ok(Ending::Closed);
    }
    Err(io::Error::other(e.to_string()))
}
