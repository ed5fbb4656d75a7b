//! The echo of a connection drawn for faults, plain or over TLS: the same replies as the
//! echo's (prefix, framing), each held, paced and cut as its [`Plan`] says. A handler of
//! its own, so that the echo without faults is what it was (no test of a fault on its
//! path), and written once over futures-io's traits for both: memory and speed matter
//! less here than in the echo, and the TLS echo's bounds do not hold for this path.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use coop::net::TcpStream;
use coop::time::{sleep, sleep_until, timeout};
use futures_rustls::TlsAcceptor;
use futures_util::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use rustix::event::{PollFd, PollFlags};

use super::{Fault, Plan, Table};
use crate::echo::Encoder;
use crate::serve::{self, Counts, Ending, Open, Settings, Totals};
use crate::tls::Tls;
use crate::tls::{self, Rewound};
use crate::tls_echo;

/// Bytes one read may take.
const READ_SIZE: usize = 16 * 1024;

/// How often a stalled connection looks whether its client has left.
const STALL_LOOK: Duration = Duration::from_secs(1);

/// Answers `peer` with `plan`'s faults (over TLS with `tls`), until it closes or a fault
/// ends the connection, and logs the end as the echo does. Boxed, and called through a
/// pointer: the echo's handlers return it in place of their own, and must not grow by
/// its state or its code.
pub(crate) fn answer(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Rc<Settings>,
    tls: Option<Rc<Tls>>,
    plan: Plan,
    table: Arc<Table>,
) -> Pin<Box<dyn Future<Output = ()>>> {
    Box::pin(handle(stream, peer, settings, tls, plan, table))
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Rc<Settings>,
    tls: Option<Rc<Tls>>,
    mut plan: Plan,
    table: Arc<Table>,
) {
    let mut open = Open::new(peer);
    let Some((first, check)) = serve::origin(&stream, &mut open, &settings).await else {
        return;
    };
    let client = open.peer;
    tracing::debug!("Faults for {client}: {}", plan.describe());
    if let Some((0, fault @ Fault::ResetAfter(_))) = plan.cut {
        // At accept: before a greeting, or a handshake.
        table.acted(&fault, client, "reset at accept");
        reset(&stream, client);
        return;
    }
    serve::nodelay(&stream, client);
    let mut faulty = Faulty {
        raw: &stream,
        client,
        plan: &mut plan,
        table: &table,
        settings: &settings,
        encoder: Encoder::new(Rc::clone(&settings.prefix), settings.framing),
        sent: 0,
        pace: None,
    };
    let outcome = match tls {
        None => {
            serve::greet(&mut open, &settings, check, None);
            faulty.echo(&mut &stream, first, &mut open.counts).await
        }
        Some(tls) => {
            let acceptor = TlsAcceptor::from(Arc::clone(&tls.config));
            let handshake = tls_echo::until_stopped(acceptor.accept(Rewound::new(first, &stream)));
            let failed = match timeout(tls.handshake_time, handshake).await {
                Ok(None) => {
                    tls_echo::cut_short(client, check, &settings);
                    return;
                }
                Ok(Some(Ok(mut session))) => {
                    let version = tls::version_name(session.get_ref().1.protocol_version());
                    serve::greet(&mut open, &settings, check, Some(version));
                    let outcome = faulty
                        .echo(&mut session, Vec::new(), &mut open.counts)
                        .await;
                    open.end(outcome, check, &settings);
                    return;
                }
                Ok(Some(Err(e))) => tls::handshake_failure(&e),
                Err(_) => tls_echo::too_slow(&tls),
            };
            tls_echo::failed_handshake(client, check, &failed);
            return;
        }
    };
    open.end(outcome, check, &settings);
}

/// A connection's echo and its faults.
struct Faulty<'a> {
    raw: &'a TcpStream,
    client: SocketAddr,
    plan: &'a mut Plan,
    table: &'a Table,
    settings: &'a Settings,
    encoder: Encoder,
    /// Reply bytes written so far.
    sent: u64,
    /// When the throttle lets the next bytes go, once it has begun.
    pace: Option<Instant>,
}

impl Faulty<'_> {
    /// Answers what the client sends over `io` (`first`: bytes read already), until it
    /// closes or a fault ends the connection.
    async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        first: Vec<u8>,
        counts: &mut Counts,
    ) -> io::Result<Ending> {
        self.raw.set_idle_timeout(self.settings.idle_timeout);
        let mut stop = pin!(coop::stop_requested());
        let mut input = first;
        let mut reply = Vec::new();
        loop {
            if input.is_empty() {
                input.resize(READ_SIZE, 0);
                let read = std::future::poll_fn(|cx| {
                    if let Poll::Ready(read) =
                        std::pin::Pin::new(&mut *io).poll_read(cx, &mut input)
                    {
                        return Poll::Ready(Some(read));
                    }
                    stop.as_mut().poll(cx).map(|()| None)
                })
                .await;
                let n = match read {
                    None => {
                        tls::close(io).await?;
                        return Ok(Ending::Stopped);
                    }
                    Some(Ok(0)) => break,
                    Some(Ok(n)) => n,
                    Some(Err(e)) => match e.kind() {
                        io::ErrorKind::TimedOut => {
                            tls::close(io).await?;
                            return Ok(Ending::Idle);
                        }
                        // TLS closed without a close_notify: as good as a close here.
                        io::ErrorKind::UnexpectedEof => break,
                        _ => return Err(e),
                    },
                };
                input.truncate(n);
            }
            serve::took_chunk(
                input.len(),
                counts,
                &self.settings.totals,
                &mut self.encoder,
            );
            reply.clear();
            self.encoder.render(&input, &mut reply, usize::MAX);
            self.encoder.advance(&input, reply.len());
            input.clear();
            if let Some(held) = self.plan.next_delay() {
                self.table
                    .acted_kind("delay", self.client, &format!("reply held {held:?}"));
                sleep(held).await;
                // The server's own hold is not the client's silence.
                self.raw.set_idle_timeout(self.settings.idle_timeout);
            }
            let room = self
                .plan
                .cut
                .map_or(u64::MAX, |(at, _)| at.saturating_sub(self.sent));
            let now = &reply[..reply.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
            self.write(io, now)
                .await
                .map_err(|e| serve::took_no_reply(e, self.settings))?;
            counts.bytes_out += now.len() as u64;
            Totals::add(&self.settings.totals.bytes_out, now.len() as u64);
            if let Some((at, fault)) = self.plan.cut
                && self.sent >= at
            {
                return self.cut(io, fault, at).await;
            }
        }
        tls::close(io).await?;
        Ok(Ending::Closed)
    }

    /// Writes `bytes` at the throttle's pace, if there is one.
    async fn write<S: AsyncWrite + Unpin>(&mut self, io: &mut S, bytes: &[u8]) -> io::Result<()> {
        let Some(rate) = self.plan.throttle else {
            io.write_all(bytes).await?;
            self.sent += bytes.len() as u64;
            return io.flush().await;
        };
        if self.pace.is_none() && !bytes.is_empty() {
            self.table.acted_kind(
                "throttle",
                self.client,
                &format!("replies at {rate} bytes/s"),
            );
        }
        // A tenth of a second's worth at a time: smooth enough for any client's clock.
        let piece = usize::try_from(rate / 10)
            .unwrap_or(usize::MAX)
            .clamp(1, READ_SIZE);
        for piece in bytes.chunks(piece) {
            let now = Instant::now();
            let at = *self.pace.get_or_insert(now);
            if at > now {
                sleep_until(at).await;
                self.raw.set_idle_timeout(self.settings.idle_timeout);
            }
            io.write_all(piece).await?;
            io.flush().await?;
            self.sent += piece.len() as u64;
            let spent = Duration::from_secs_f64(piece.len() as f64 / rate as f64);
            self.pace = Some(at.max(now) + spent);
        }
        Ok(())
    }

    /// Ends the connection as the cut `fault` (reached after `at` bytes) says.
    async fn cut<S: AsyncWrite + Unpin>(
        &mut self,
        io: &mut S,
        fault: Fault,
        at: u64,
    ) -> io::Result<Ending> {
        let idle = self.settings.idle_timeout;
        cut(
            self.table,
            self.client,
            self.raw,
            idle,
            fault,
            at,
            tls::close(io),
        )
        .await
    }
}

/// Ends a connection of `client` over `raw` as the cut `fault` (reached after `at`
/// reply bytes) says: `close` closes it, a zero linger resets it, or it stalls (until
/// the idle timeout `idle`, at most).
pub(crate) async fn cut(
    table: &Table,
    client: SocketAddr,
    raw: &TcpStream,
    idle: Option<Duration>,
    fault: Fault,
    at: u64,
    close: impl Future<Output = io::Result<()>>,
) -> io::Result<Ending> {
    let (what, done) = match fault {
        Fault::CloseAfter(_) => ("closed", "closed it"),
        Fault::ResetAfter(_) => ("reset", "reset it"),
        _ => ("stalled", ""),
    };
    table.acted(&fault, client, &format!("{what} after {at} bytes"));
    match fault {
        Fault::CloseAfter(_) => {
            close.await?;
            // The socket stays until the client leaves: closed with the client's bytes
            // unread, it would send an RST after the FIN.
            if let Waited::Stopped = until_left(raw, idle).await {
                return Ok(Ending::Stopped);
            }
        }
        Fault::ResetAfter(_) => reset(raw, client),
        _ => return Ok(stall(raw, idle, at).await),
    }
    Ok(Ending::Faulted {
        kind: fault.kind(),
        at,
        what: done,
    })
}

/// Neither reads nor writes until the client leaves, the idle timeout passes, or the
/// server stops.
pub(crate) async fn stall(raw: &TcpStream, idle: Option<Duration>, at: u64) -> Ending {
    match until_left(raw, idle).await {
        Waited::Left => Ending::Faulted {
            kind: "stall-after",
            at,
            what: "stalled it until the client left",
        },
        Waited::Idle => Ending::Idle,
        Waited::Stopped => Ending::Stopped,
    }
}

/// How a wait for a client to leave ended.
enum Waited {
    Left,
    Idle,
    Stopped,
}

/// Waits, taking nothing, until the client leaves, the idle timeout passes, or the
/// server stops. Whether the client has left is looked at each `STALL_LOOK` (a poll for
/// the peer's hang-up that does not wait).
async fn until_left(raw: &TcpStream, idle: Option<Duration>) -> Waited {
    let started = Instant::now();
    let mut stop = pin!(coop::stop_requested());
    loop {
        let look = idle.map_or(STALL_LOOK, |idle| {
            idle.saturating_sub(started.elapsed()).min(STALL_LOOK)
        });
        let mut wait = pin!(sleep(look));
        let stopped = std::future::poll_fn(|cx| {
            if stop.as_mut().poll(cx).is_ready() {
                return Poll::Ready(true);
            }
            wait.as_mut().poll(cx).map(|()| false)
        })
        .await;
        if stopped {
            return Waited::Stopped;
        }
        if idle.is_some_and(|idle| started.elapsed() >= idle) {
            return Waited::Idle;
        }
        // The client's FIN (or a reset) is seen at once by poll's RDHUP, even behind
        // bytes it sent that were never read.
        let gone = PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR;
        let mut fd = [PollFd::new(raw, gone)];
        let now = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fd, Some(&now)) {
            Ok(0) => {}
            _ => return Waited::Left,
        }
    }
}

/// Resets the connection: a zero linger, so that its close (when the handler returns
/// and the stream is dropped) sends an RST.
pub(crate) fn reset(stream: &TcpStream, client: SocketAddr) {
    if let Err(e) = stream.set_linger(Some(Duration::ZERO)) {
        tracing::debug!("SO_LINGER on {client}: {e}");
    }
}
