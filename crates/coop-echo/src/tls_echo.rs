//! `serve --tls-cert --tls-key`: the handshake, within a time limit, then the same echo
//! (prefix, framing, idle timeout, limits) over the TLS stream.
//!
//! The plain echo writes straight from the thread's read buffer; here rustls encrypts
//! into buffers of its own anyway, so the client's bytes are copied out of the thread's
//! read buffer before the write waits, and the reply is rendered into a buffer of the
//! connection's, `RENDER_SIZE` bytes at a time (a line more at most). Both are let go
//! once the reply is out: a connection waiting for its client holds no buffer of ours
//! (two allocations per message, beside rustls' own).
//! Reading stops while a reply waits: a client that sends and never reads stalls itself,
//! and holds at most one read's reply.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use coop::net::TcpStream;
use coop::time::timeout;
use futures_rustls::TlsAcceptor;
use futures_rustls::server::TlsStream;
use futures_util::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::echo::Encoder;
use crate::refused::{self, Reason};
use crate::serve::{self, Counts, Ending, Open, RENDER_SIZE, Settings, Totals};
use crate::tls::{self, Rewound};

/// What a TLS server needs, shared by its connections (and its threads).
#[derive(Clone)]
pub struct Tls {
    /// The server's certificate and key, and rustls' settings.
    pub acceptor: TlsAcceptor,
    /// A client that has not finished its handshake by then is let go.
    pub handshake_time: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("handshake_time", &self.handshake_time)
            .finish_non_exhaustive()
    }
}

type Session<'a> = TlsStream<Rewound<&'a TcpStream>>;

/// Answers one TLS client until it closes (or falls silent, or fails), and logs the end:
/// [`serve::handle`] with a handshake first. A handler of its own, rather than a branch in
/// that one, so that the plain echo's code is what it was without TLS.
pub(crate) fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Rc<Settings>,
    tls: Rc<Tls>,
) -> impl Future<Output = ()> {
    let mut open = Open::new(peer);
    async move {
        let Some((first, check)) = serve::origin(&stream, &mut open, &settings).await else {
            return;
        };
        // Before the handshake: its flights are small writes too.
        serve::nodelay(&stream, open.peer);
        if let Some(outcome) = session(&stream, first, check, &mut open, &settings, &tls).await {
            open.end(outcome, check, &settings);
        }
    }
}

/// Handshakes (`first`: bytes read already, after a PROXY header), says who connected,
/// and answers until the client closes. `None` if the handshake failed: logged here, in
/// one line naming the client and the reason (at debug level for a load balancer's
/// health `check`, which may well close without one).
async fn session(
    stream: &TcpStream,
    first: Vec<u8>,
    check: bool,
    open: &mut Open,
    settings: &Settings,
    tls: &Tls,
) -> Option<io::Result<Ending>> {
    let peer = open.peer;
    let handshake = until_stopped(tls.acceptor.accept(Rewound::new(first, stream)));
    let failed = match timeout(tls.handshake_time, handshake).await {
        Ok(None) => {
            if check {
                tracing::debug!("TLS handshake with {peer} (a health check) cut short");
            } else if !settings.quiet {
                tracing::info!("TLS handshake with {peer} cut short: the server stopped");
            }
            return None;
        }
        Ok(Some(Ok(mut session))) => {
            let version = tls::version_name(session.get_ref().1.protocol_version());
            serve::greet(open, settings, check, Some(version));
            let mut encoder = Encoder::new(settings.prefix.clone(), settings.framing);
            return Some(echo(&mut session, &mut encoder, &mut open.counts, settings).await);
        }
        Ok(Some(Err(e))) => tls::handshake_failure(&e),
        Err(_) => format!("not done within {} s", tls.handshake_time.as_secs_f64()),
    };
    if check {
        tracing::debug!("TLS handshake with {peer} (a health check) failed: {failed}");
    } else if refused::tally(Reason::TlsHandshake, peer, &failed) {
        tracing::warn!("TLS handshake with {peer} failed: {failed}");
    } else {
        tracing::debug!("TLS handshake with {peer} failed: {failed}");
    }
    None
}

/// Answers everything the client sends, until it closes; then closes with a
/// `close_notify` and a FIN.
async fn echo(
    session: &mut Session<'_>,
    encoder: &mut Encoder,
    counts: &mut Counts,
    settings: &Settings,
) -> io::Result<Ending> {
    let stream = *session.get_ref().0.inner();
    // The runtime keeps the idle clock on the socket: a read or write of the socket that
    // moves bytes resets it; one that waits past it fails with `TimedOut`.
    stream.set_idle_timeout(settings.idle_timeout);
    // Waited on only between replies: what was read is answered before the goodbye.
    let mut stop = std::pin::pin!(coop::stop_requested());
    loop {
        let mut input = Vec::new();
        let read = std::future::poll_fn(|cx| {
            serve::with_read_buffer(|buf| match Pin::new(&mut *session).poll_read(cx, buf) {
                Poll::Ready(Ok(0)) => Poll::Ready(Read::End),
                Poll::Ready(Ok(n)) => {
                    input.extend_from_slice(&buf[..n]);
                    Poll::Ready(Read::Some(n))
                }
                Poll::Ready(Err(e)) => Poll::Ready(match e.kind() {
                    io::ErrorKind::TimedOut => Read::Idle,
                    // Closed without a `close_notify`: as good as a close for an echo,
                    // whose client knows from the replies what got through.
                    io::ErrorKind::UnexpectedEof => Read::End,
                    _ => Read::Failed(e),
                }),
                // Records may have called for an answer that rustls queued (an alert
                // refusing a renegotiation): it goes out now, not with the next reply,
                // which the client may be waiting on it to send.
                Poll::Pending => match Pin::new(&mut *session).poll_flush(cx) {
                    Poll::Ready(Err(e)) => {
                        Poll::Ready(Read::Failed(serve::took_no_reply(e, settings)))
                    }
                    _ if stop.as_mut().poll(cx).is_ready() => Poll::Ready(Read::Stopped),
                    _ => Poll::Pending,
                },
            })
        })
        .await;
        match read {
            Read::Some(n) => serve::took_chunk(n, counts, &settings.totals, encoder),
            Read::End => break,
            Read::Idle => {
                close(session).await?;
                return Ok(Ending::Idle);
            }
            // A close_notify rather than a cut (the worker gives the goodbyes a moment
            // before its runtime goes).
            Read::Stopped => {
                close(session).await?;
                return Ok(Ending::Stopped);
            }
            Read::Failed(e) => return Err(e),
        }
        let mut reply = Vec::new();
        let mut answered = 0;
        while answered < input.len() {
            reply.clear();
            encoder.render(&input[answered..], &mut reply, RENDER_SIZE);
            answered += encoder.advance(&input[answered..], reply.len());
            let written = async {
                session.write_all(&reply).await?;
                session.flush().await
            };
            written
                .await
                .map_err(|e| serve::took_no_reply(e, settings))?;
            counts.bytes_out += reply.len() as u64;
            Totals::add(&settings.totals.bytes_out, reply.len() as u64);
        }
    }
    close(session).await?;
    Ok(Ending::Closed)
}

/// What a wait for the client's next bytes came to.
enum Read {
    /// This many bytes, in `input`.
    Some(usize),
    /// The client closed its side.
    End,
    /// The client has sent nothing for the idle timeout.
    Idle,
    /// The server stops.
    Stopped,
    /// The connection failed (or a queued answer could not go out).
    Failed(io::Error),
}

/// `future`'s output, or `None` if the server stops first.
async fn until_stopped<F: Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut stop = std::pin::pin!(coop::stop_requested());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        stop.as_mut().poll(cx).map(|()| None)
    })
    .await
}

/// `close_notify`, then the FIN. The client may have closed already.
async fn close(session: &mut Session<'_>) -> io::Result<()> {
    match session.close().await {
        Err(e)
            if e.kind() != io::ErrorKind::NotConnected && e.kind() != io::ErrorKind::BrokenPipe =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}
