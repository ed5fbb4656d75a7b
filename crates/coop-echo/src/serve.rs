//! `coop-echo serve`: the seed's `echo_handler`, for every client, on one thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use coop::net::{TcpListener, TcpStream, UnixListener, UnixStream};

use crate::echo::{CHUNK_SLICES, Encoder, Framing};
use crate::per_source::PerSource;
use crate::plural::count;
use crate::proxy::{self, Origin, Refusal};
use crate::refused::{self, Reason};

/// Bytes one read may take from a client. Reads land in one buffer that all connections
/// share; a connection copies out only what its client is not yet accepting back.
const READ_SIZE: usize = 16 * 1024;

/// Bytes of reply rendered per write in line framing (one line more at most).
const RENDER_SIZE: usize = 64 * 1024;

/// Room before the read bytes in the shared buffer, where a prefix this long or shorter
/// is put so that it and the bytes form the reply in one piece.
const PREFIX_ROOM: usize = 256;

/// The buffer every connection of a thread reads into, with room for the prefix before.
struct Scratch {
    buf: Box<[u8]>,
    /// The prefix that sits at the end of the room already: every connection of a server
    /// has the same, so it is copied there once, not once per message.
    placed: Option<Rc<[u8]>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        buf: vec![0; PREFIX_ROOM + READ_SIZE].into_boxed_slice(),
        placed: None,
    });
    /// Line framing's replies, rendered: thousands of short lines make one write.
    static RENDERED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What every connection's handler needs to know.
#[derive(Debug)]
pub struct Settings {
    /// Bytes put in front of each reply.
    pub prefix: Rc<[u8]>,
    /// Where the prefix goes.
    pub framing: Framing,
    /// No `Connection from` / `Connection closed` lines.
    pub quiet: bool,
    /// Close a connection whose client has sent nothing for this long.
    pub idle_timeout: Option<Duration>,
    /// Every connection begins with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// At most this many connections at once from one client address, across threads
    /// (`--max-connections-per-source`).
    pub per_source: Option<PerSource>,
    /// What every connection adds to.
    pub totals: Totals,
}

/// Counters over every connection, for the stats line and the summary.
#[derive(Debug, Default)]
pub struct Totals {
    /// Bytes read from clients.
    pub bytes_in: Cell<u64>,
    /// Bytes written to clients.
    pub bytes_out: Cell<u64>,
    /// Reads that returned data.
    pub messages: Cell<u64>,
    /// UDP datagrams received.
    pub udp_in: Cell<u64>,
    /// UDP datagrams answered.
    pub udp_out: Cell<u64>,
    /// UDP datagrams left unanswered by the rate limit.
    pub udp_refused: Cell<u64>,
}

impl Totals {
    pub(crate) fn add(cell: &Cell<u64>, n: u64) {
        cell.set(cell.get() + n);
    }
}

/// Serves `listener` forever.
pub async fn run(listener: TcpListener, settings: Settings) {
    let settings = Rc::new(settings);
    coop::serve(listener, move |stream, peer| {
        handle(stream, peer, Rc::clone(&settings))
    })
    .await;
}

/// What the echo needs of a connection: a TCP stream, or a Unix one (`--unix`). The
/// echo is compiled once for each, so the TCP path is as it was.
pub(crate) trait Conn {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    fn writable(&self) -> impl Future<Output = io::Result<()>>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
    fn set_idle_timeout(&self, timeout: Option<Duration>);
}

macro_rules! conn {
    ($($stream:ty),*) => {$(
        impl Conn for $stream {
            #[inline(always)]
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }
            #[inline(always)]
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$stream>::try_read(self, buf)
            }
            #[inline(always)]
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$stream>::try_write(self, buf)
            }
            #[inline(always)]
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$stream>::try_write_vectored(self, bufs)
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> {
                <$stream>::writable(self)
            }
            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$stream>::shutdown(self, how)
            }
            fn set_idle_timeout(&self, timeout: Option<Duration>) {
                <$stream>::set_idle_timeout(self, timeout)
            }
        }
    )*};
}

conn!(TcpStream, UnixStream);

/// Serves the Unix socket `listener` (at `path`) until the task is aborted: the echo
/// as on TCP (prefix, framing, idle timeout), with no PROXY header and no TLS.
pub async fn run_unix(listener: UnixListener, path: Rc<str>, settings: Rc<Settings>) {
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                drop(coop::spawn(handle_unix(
                    stream,
                    Rc::clone(&path),
                    Rc::clone(&settings),
                )));
            }
            Err(e) => {
                // Out of descriptors or memory: the TCP port's server rides it out the
                // same way, and says so at most once a minute.
                let now = coop::time::now();
                if last_warning.is_none_or(|at| now - at >= Duration::from_secs(60)) {
                    tracing::warn!("cannot accept on {path}: {e}; retrying in 100 ms");
                    last_warning = Some(now);
                }
                coop::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers one client of the Unix socket until it closes (or falls silent, or fails).
async fn handle_unix(stream: UnixStream, path: Rc<str>, settings: Rc<Settings>) {
    if !settings.quiet {
        tracing::info!("Connection on {path}");
    }
    let mut encoder = Encoder::new(Rc::clone(&settings.prefix), settings.framing);
    let mut counts = Counts::default();
    let outcome = Box::pin(echo(
        &stream,
        &mut encoder,
        &mut counts,
        &settings,
        Vec::new(),
    ))
    .await;
    if !settings.quiet {
        let Counts {
            bytes_in,
            bytes_out,
        } = counts;
        match outcome {
            Ok(Ending::Idle) => tracing::info!(
                "Connection closed on {path}: idle for {} s ({bytes_in} bytes in, {bytes_out} bytes out)",
                settings.idle_timeout.unwrap_or_default().as_secs_f64()
            ),
            Ok(_) => tracing::info!(
                "Connection closed on {path} ({bytes_in} bytes in, {bytes_out} bytes out)"
            ),
            Err(e) => tracing::info!(
                "Connection closed on {path}: {e} ({bytes_in} bytes in, {bytes_out} bytes out)"
            ),
        }
    }
}

/// Bytes a connection read and wrote, for its closing line.
#[derive(Default, Debug)]
pub(crate) struct Counts {
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

/// How a connection ended, when it ended well.
pub(crate) enum Ending {
    /// The client closed its side, and had every byte answered.
    Closed,
    /// The client sent nothing for the idle timeout.
    Idle,
    /// The server stopped, and closed the connection (the TLS echo's goodbye: a
    /// close_notify).
    Stopped,
    /// A fault (`--fault`) of this kind, set at this many bytes, ended it so.
    Faulted {
        kind: &'static str,
        at: u64,
        what: &'static str,
    },
}

/// Answers one client until it closes (or falls silent, or fails), and logs the end.
pub fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Rc<Settings>,
) -> impl Future<Output = ()> {
    // The peer goes into the connection's guard at once, and the guard is what the task
    // keeps: no copy of an address waits beside it in every connection's state. Quiet
    // until the connection is known (a refused one had no `Connection from` line).
    let mut open = Open::new(peer);
    // An `async move` block rather than an `async fn`: an async fn keeps its arguments
    // twice in its state (as arguments, and as locals), and every connection would
    // carry the copy.
    async move {
        let Some((first, check)) = origin(&stream, &mut open, &settings).await else {
            return;
        };
        greet(&mut open, &settings, check, None);
        nodelay(&stream, open.peer);
        let mut encoder = Encoder::new(Rc::clone(&settings.prefix), settings.framing);
        let outcome = echo(&stream, &mut encoder, &mut open.counts, &settings, first).await;
        open.end(outcome, check, &settings);
    }
}

/// Learns who the client is: the peer, or whom a load balancer's PROXY header names (then
/// in `open.peer`), and takes its place under `--max-connections-per-source`. Returns
/// the bytes that came after a header, and whether it is a load balancer's health check;
/// `None` if the connection is refused. Every handler (plain, TLS, HTTP) begins here: a
/// client over its share is let go before a handshake or a request costs anything.
pub(crate) async fn origin(
    stream: &TcpStream,
    open: &mut Open,
    settings: &Settings,
) -> Option<(Vec<u8>, bool)> {
    if !settings.proxy_protocol {
        return admit(open, settings).then(|| (Vec::new(), false));
    }
    let peer = open.peer;
    let limit = settings
        .idle_timeout
        .map_or(proxy::HEADER_TIME, |idle| idle.min(proxy::HEADER_TIME));
    // Boxed: the header's reading lives only until the header is in, and would
    // otherwise size every connection's task for good (async state machines overlap
    // their phases poorly).
    let first = match Box::pin(proxy::read_header(stream, peer, limit)).await {
        Ok((Origin::Client { source, .. }, first)) => {
            let source = canonical(source);
            tracing::debug!("Connection from {source} comes through {peer}");
            open.peer = source;
            first
        }
        // A load balancer's own health check: not a client, and not counted as one (a
        // check refused for its address would take the server out of the pool).
        Ok((Origin::Local, first)) => return Some((first, true)),
        Ok((Origin::Unnamed, first)) => first,
        Err(Refusal::Silent) => {
            tracing::debug!("Connection from {peer} closed before a PROXY header");
            return None;
        }
        Err(Refusal::Bad(why)) => {
            if refused::tally(Reason::ProxyHeader, peer, &why) {
                tracing::warn!("Connection from {peer} refused: {why}");
            } else {
                tracing::debug!("Connection from {peer} refused: {why}");
            }
            return None;
        }
    };
    // Before the wait for a first byte: a client that sends its header and then nothing
    // holds its place as any other does.
    if !admit(open, settings) {
        return None;
    }
    // A load balancer's probe sends its header and nothing more (HAProxy's plain check
    // resets at once, maybe before the header is even read): only a byte of its own
    // makes the connection a client's, worth its lines at info level.
    if first.is_empty() {
        if let Err(ended) = Box::pin(first_byte(stream, settings.idle_timeout)).await {
            tracing::debug!(
                "Connection from {} ended before sending anything (a probe): {ended}",
                open.peer
            );
            return None;
        }
    }
    Some((first, false))
}

/// Takes a place for the client (`open.peer`) under `--max-connections-per-source`, held
/// until `open` goes; `false`, with a warning, if its address has none left.
fn admit(open: &mut Open, settings: &Settings) -> bool {
    let Some(per_source) = &settings.per_source else {
        return true;
    };
    let client = open.peer;
    if per_source.take(client.ip()) {
        open.place = Some(per_source.clone());
        return true;
    }
    let why = format!(
        "{} already open from its address",
        count(u64::from(per_source.max()), "connection")
    );
    if refused::tally(Reason::PerSource, client, &why) {
        tracing::warn!("Connection from {client} refused: {why} (--max-connections-per-source)");
    } else {
        tracing::debug!("Connection from {client} refused: {why} (--max-connections-per-source)");
    }
    false
}

/// Waits for the client's first byte, which stays unread; `Err` says how the connection
/// ended instead.
async fn first_byte(stream: &TcpStream, idle_timeout: Option<Duration>) -> Result<(), String> {
    stream.set_idle_timeout(idle_timeout);
    match stream.peek(&mut [0]).await {
        Ok(0) => Err("closed".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::TimedOut => Err(format!(
            "idle for {} s",
            idle_timeout.unwrap_or_default().as_secs_f64()
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// An address as people write it: an IPv4 client of a dual-stack listener (`--host ::`)
/// is `127.0.0.1`, not the IPv4-mapped `::ffff:127.0.0.1` the OS names it by.
pub(crate) fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Says who connected (`over`: the TLS version, if any); `open.quiet` then says whether
/// the connection goes unlogged at info level. A load balancer's health `check` is
/// logged at debug level: one a second would drown the log.
pub(crate) fn greet(open: &mut Open, settings: &Settings, check: bool, over: Option<&str>) {
    let client = open.peer;
    let info = !settings.quiet && !check;
    open.quiet = !info;
    match (info, over) {
        (true, None) => tracing::info!("Connection from {client}"),
        (true, Some(over)) => tracing::info!("Connection from {client} ({over})"),
        (false, _) if check => tracing::debug!("Health check from {client}"),
        _ => {}
    }
}

/// Replies go out as soon as they are written: Nagle's algorithm would hold a reply back
/// while an earlier one is unacknowledged, which stalls pipelined clients (and a TLS
/// handshake's last flight).
pub(crate) fn nodelay(stream: &TcpStream, client: SocketAddr) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY on {client}: {e}");
    }
}

/// A connection being answered. Its handler can be dropped before it returns only when
/// the runtime goes with the connection still open (the server stopped: the shutdown
/// deadline passed, or a second signal came), and then this gives the connection its
/// closing line. A handler that panics drops this while unwinding, and coop's server
/// logs the panic instead.
pub(crate) struct Open {
    pub(crate) peer: SocketAddr,
    quiet: bool,
    pub(crate) counts: Counts,
    ended: bool,
    /// The table in which the connection holds a place for `peer`'s address
    /// (`--max-connections-per-source`), given back when this goes.
    place: Option<PerSource>,
}

impl Open {
    /// A connection from `peer`, quiet until it is known (a refused one has no
    /// `Connection from` line).
    pub(crate) fn new(peer: SocketAddr) -> Open {
        Open {
            peer: canonical(peer),
            quiet: true,
            counts: Counts::default(),
            ended: false,
            place: None,
        }
    }

    /// The connection ended with `outcome`: its closing line (at debug level for a
    /// load balancer's health `check`).
    pub(crate) fn end(&mut self, outcome: io::Result<Ending>, check: bool, settings: &Settings) {
        self.ended = true;
        // Before the line: once a client sees its connection closed, its place is free.
        self.give_back();
        let Counts {
            bytes_in,
            bytes_out,
        } = self.counts;
        let client = self.peer;
        if !self.quiet {
            match outcome {
                Ok(Ending::Closed) => tracing::info!(
                    "Connection closed {client} ({bytes_in} bytes in, {bytes_out} bytes out)"
                ),
                Ok(Ending::Idle) => tracing::info!(
                    "Connection closed {client}: idle for {} s ({bytes_in} bytes in, {bytes_out} bytes out)",
                    settings.idle_timeout.unwrap_or_default().as_secs_f64()
                ),
                Ok(Ending::Stopped) => self.log_stopped(),
                Ok(Ending::Faulted { kind, at, what }) => tracing::info!(
                    "Connection closed {client}: the fault {kind}={at} {what} ({bytes_in} bytes in, {bytes_out} bytes out)"
                ),
                Err(e) => tracing::info!(
                    "Connection closed {client}: {e} ({bytes_in} bytes in, {bytes_out} bytes out)"
                ),
            }
        } else if check {
            match outcome {
                Ok(_) => tracing::debug!(
                    "Health check from {client} answered ({bytes_in} bytes in, {bytes_out} bytes out)"
                ),
                Err(e) => tracing::debug!(
                    "Health check from {client} ended: {e} ({bytes_in} bytes in, {bytes_out} bytes out)"
                ),
            }
        }
    }

    /// Gives back the connection's place under `--max-connections-per-source`, if it
    /// holds one.
    fn give_back(&mut self) {
        if let Some(table) = self.place.take() {
            table.give_back(self.peer.ip());
        }
    }

    /// The line of a connection the server's stop closed.
    fn log_stopped(&self) {
        let Counts {
            bytes_in,
            bytes_out,
        } = self.counts;
        tracing::info!(
            "Connection closed {}: the server stopped ({bytes_in} bytes in, {bytes_out} bytes out)",
            self.peer
        );
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.give_back();
        if !(self.ended || self.quiet || std::thread::panicking()) {
            self.log_stopped();
        }
    }
}

/// What one turn of reading and answering came to.
enum Turn {
    /// Everything read is answered; read again.
    Answered,
    /// Nothing to read after all.
    NothingRead,
    /// The client stopped accepting: the unanswered input is in `pending`.
    Blocked,
    /// The client closed its side.
    Eof,
    /// The client has made no progress for the idle timeout.
    Idle,
}

/// Answers everything the client sends, until it closes its side; then closes ours.
///
/// The client's input is read only once all earlier input is answered, so a client that
/// sends without reading stalls itself, not the server's memory.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice in every connection's state"
)]
fn echo<'a, S: Conn>(
    stream: &'a S,
    encoder: &'a mut Encoder,
    counts: &'a mut Counts,
    settings: &'a Settings,
    // Input to answer before reading more: at first, what came with a PROXY header.
    mut pending: Vec<u8>,
) -> impl Future<Output = io::Result<Ending>> + 'a {
    // As in `handle`: no second copy of the arguments.
    async move {
        // The runtime keeps the idle clock: a read or write that moves bytes resets it.
        stream.set_idle_timeout(settings.idle_timeout);
        // Bytes that came with the PROXY header are the client's first chunk.
        if !pending.is_empty() {
            took_chunk(pending.len(), counts, &settings.totals, encoder);
            Box::pin(flush(stream, encoder, &mut pending, counts, settings)).await?;
        }
        loop {
            // `poll_read_ready`, not `readable()`: no future of its own to step through
            // at every message.
            std::future::poll_fn(|cx| stream.poll_read_ready(cx)).await?;
            let turn = SCRATCH.with_borrow_mut(|scratch| {
                let n = match stream.try_read(&mut scratch.buf[PREFIX_ROOM..]) {
                    Ok(0) => return Ok(Turn::Eof),
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(Turn::NothingRead);
                    }
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(Turn::Idle),
                    Err(e) => return Err(e),
                };
                took_chunk(n, counts, &settings.totals, encoder);
                let before = counts.bytes_out;
                let answered = answer_now(stream, encoder, scratch, n, counts);
                Totals::add(&settings.totals.bytes_out, counts.bytes_out - before);
                let answered = answered?;
                if answered < n {
                    pending
                        .extend_from_slice(&scratch.buf[PREFIX_ROOM + answered..PREFIX_ROOM + n]);
                    return Ok(Turn::Blocked);
                }
                Ok(Turn::Answered)
            })?;
            match turn {
                Turn::Answered | Turn::NothingRead => {}
                Turn::Blocked => {
                    Box::pin(flush(stream, encoder, &mut pending, counts, settings)).await?;
                }
                Turn::Idle => {
                    stream.shutdown(Shutdown::Write)?;
                    return Ok(Ending::Idle);
                }
                Turn::Eof => break,
            }
        }
        // Everything is answered: say so with a FIN. The client may have closed already.
        match stream.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(Ending::Closed),
        }
    }
}

/// `n` bytes came in, a chunk of their own: counted, and the reply to them begins.
#[inline]
pub(crate) fn took_chunk(n: usize, counts: &mut Counts, totals: &Totals, encoder: &mut Encoder) {
    counts.bytes_in += n as u64;
    Totals::add(&totals.bytes_in, n as u64);
    Totals::add(&totals.messages, 1);
    encoder.begin_chunk();
}

/// Answers all of `pending`, waiting for the client to take it, and counts what went
/// out. Called boxed: only a client that takes no replies (or the bytes after a PROXY
/// header) comes here, and the waiting would otherwise size every connection's state for
/// good.
async fn flush<S: Conn>(
    stream: &S,
    encoder: &mut Encoder,
    pending: &mut Vec<u8>,
    counts: &mut Counts,
    settings: &Settings,
) -> io::Result<()> {
    let before = counts.bytes_out;
    let flushed = answer_pending(stream, encoder, pending, counts).await;
    Totals::add(&settings.totals.bytes_out, counts.bytes_out - before);
    flushed.map_err(|e| took_no_reply(e, settings))
}

/// A write that timed out: a client that sends and never reads must not hold its
/// connection forever, and its closing line says so.
pub(crate) fn took_no_reply(e: io::Error, settings: &Settings) -> io::Error {
    match (e.kind(), settings.idle_timeout) {
        (io::ErrorKind::TimedOut, Some(idle)) => io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the client took no reply for {} s", idle.as_secs_f64()),
        ),
        _ => e,
    }
}

/// Writes as much of the reply to the `n` bytes just read (at `PREFIX_ROOM` in
/// `scratch`) as the socket takes without waiting; returns how many of them it answered.
#[inline]
fn answer_now<S: Conn>(
    stream: &S,
    encoder: &mut Encoder,
    scratch: &mut Scratch,
    n: usize,
    counts: &mut Counts,
) -> io::Result<usize> {
    let prefix = encoder.prefix().len();
    if encoder.framing() == Framing::Chunk && prefix <= PREFIX_ROOM {
        // The prefix goes just before the bytes read: the reply is one slice, and one
        // plain write (cheaper in the kernel than a writev of two) nearly always takes it.
        let start = PREFIX_ROOM - prefix;
        let shared = encoder.prefix();
        if !scratch
            .placed
            .as_ref()
            .is_some_and(|placed| Rc::ptr_eq(placed, shared))
        {
            scratch.buf[start..PREFIX_ROOM].copy_from_slice(shared);
            scratch.placed = Some(Rc::clone(shared));
        }
        let scratch = &scratch.buf;
        let written = match stream.try_write(&scratch[start..PREFIX_ROOM + n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(e) => return full_if_idle(Err(e)),
        };
        counts.bytes_out += written as u64;
        if written == prefix + n {
            // The whole reply went out, as it nearly always does.
            encoder.chunk_answered();
            return Ok(n);
        }
        let input = &scratch[PREFIX_ROOM..PREFIX_ROOM + n];
        let answered = encoder.advance(input, written);
        if answered == n {
            return Ok(answered);
        }
        let rest = answer_in::<CHUNK_SLICES, S>(stream, encoder, &input[answered..], counts);
        return Ok(answered + full_if_idle(rest)?);
    }
    full_if_idle(answer(
        stream,
        encoder,
        &scratch.buf[PREFIX_ROOM..PREFIX_ROOM + n],
        counts,
    ))
}

/// A write that found the socket full, or the client idle, wrote nothing (`answer_by`
/// says `TimedOut` only then): to the reading loop, both are a full socket, and the
/// reply waits in `flush`, which says why the connection ends if it does.
fn full_if_idle(written: io::Result<usize>) -> io::Result<usize> {
    match written {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(0)
        }
        written => written,
    }
}

/// Writes as much of the reply to `input` as the socket takes without waiting; returns how
/// many input bytes that answered.
fn answer<S: Conn>(
    stream: &S,
    encoder: &mut Encoder,
    input: &[u8],
    counts: &mut Counts,
) -> io::Result<usize> {
    match encoder.framing() {
        Framing::Chunk => answer_in::<CHUNK_SLICES, S>(stream, encoder, input, counts),
        Framing::Line => answer_rendered(stream, encoder, input, counts),
    }
}

/// Chunk framing, the general case: the reply as slices, in `writev`s.
#[inline(never)]
fn answer_in<const SLICES: usize, S: Conn>(
    stream: &S,
    encoder: &mut Encoder,
    input: &[u8],
    counts: &mut Counts,
) -> io::Result<usize> {
    answer_by(encoder, input, counts, |encoder, rest| {
        let mut slices = [IoSlice::new(&[]); SLICES];
        let filled = encoder.slices(rest, &mut slices);
        stream.try_write_vectored(&slices[..filled])
    })
}

/// Line framing: renders the reply into the shared buffer and writes it in one call.
#[inline(never)]
fn answer_rendered<S: Conn>(
    stream: &S,
    encoder: &mut Encoder,
    input: &[u8],
    counts: &mut Counts,
) -> io::Result<usize> {
    RENDERED.with_borrow_mut(|rendered| {
        answer_by(encoder, input, counts, |encoder, rest| {
            rendered.clear();
            encoder.render(rest, rendered, RENDER_SIZE);
            stream.try_write(rendered)
        })
    })
}

/// Writes the reply to `input` with `write` (which writes some of the reply to what is
/// left of the input) until it is all out or the socket is full; returns how many input
/// bytes were answered.
fn answer_by(
    encoder: &mut Encoder,
    input: &[u8],
    counts: &mut Counts,
    mut write: impl FnMut(&Encoder, &[u8]) -> io::Result<usize>,
) -> io::Result<usize> {
    let mut answered = 0;
    while answered < input.len() {
        let rest = &input[answered..];
        match write(encoder, rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                counts.bytes_out += written as u64;
                answered += encoder.advance(rest, written);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            // The client is idle (the stream's idle clock): an error only if nothing went
            // out in this call, so that what did is counted, and the next call says so.
            Err(e) if e.kind() == io::ErrorKind::TimedOut && answered > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(answered)
}

/// Waits for the client to accept the rest of the reply, then lets the buffer go.
async fn answer_pending<S: Conn>(
    stream: &S,
    encoder: &mut Encoder,
    pending: &mut Vec<u8>,
    counts: &mut Counts,
) -> io::Result<()> {
    let mut answered = 0;
    while answered < pending.len() {
        stream.writable().await?;
        answered += answer(stream, encoder, &pending[answered..], counts)?;
    }
    // Nothing in flight: keep no buffer for a connection that may now idle for hours.
    *pending = Vec::new();
    Ok(())
}
