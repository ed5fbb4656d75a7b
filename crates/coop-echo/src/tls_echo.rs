//! `serve --tls-cert --tls-key`: the handshake, within a time limit, then the same echo
//! (prefix, framing, idle timeout, limits) over TLS, driven by `tls_conn::TlsConn` so that a
//! connection holds buffers only while something waits (a client that sends and never
//! reads stalls itself, and holds at most a record's worth).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;

use coop::net::TcpStream;
use coop::time::timeout;

use crate::echo::Encoder;
use crate::refused::{self, Reason};
use crate::serve::{self, Counts, Ending, Open, Settings};
use crate::tls;
use crate::tls_conn::{Replies, Step, TlsConn};

pub use crate::tls::Tls;

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
    let mut encoder = Encoder::new(settings.prefix.clone(), settings.framing);
    let mut counts = Counts::default();
    let mut replies = Replies {
        encoder: &mut encoder,
        counts: &mut counts,
        totals: &settings.totals,
    };
    let handshaken = async {
        let mut conn = TlsConn::new(Arc::clone(&tls.config), first)?;
        loop {
            match conn.step(stream, &mut replies)? {
                Step::Handshaken => return Ok(conn),
                Step::Read => stream.readable().await?,
                Step::Write => stream.writable().await?,
                Step::Ended => return Err(io::ErrorKind::UnexpectedEof.into()),
            }
        }
    };
    let failed = match timeout(tls.handshake_time, until_stopped(handshaken)).await {
        Ok(None) => {
            cut_short(peer, check, settings);
            return None;
        }
        Ok(Some(Ok(mut conn))) => {
            serve::greet(
                open,
                settings,
                check,
                Some(tls::version_name(conn.protocol_version())),
            );
            let ending = echo(&mut conn, stream, &mut replies, settings).await;
            open.counts = counts;
            return Some(ending);
        }
        Ok(Some(Err(e))) => tls::handshake_failure(&e),
        Err(_) => too_slow(tls),
    };
    failed_handshake(peer, check, &failed);
    None
}

/// The line of a handshake the server's stop cut short.
pub(crate) fn cut_short(peer: SocketAddr, check: bool, settings: &Settings) {
    if check {
        tracing::debug!("TLS handshake with {peer} (a health check) cut short");
    } else if !settings.quiet {
        tracing::info!("TLS handshake with {peer} cut short: the server stopped");
    }
}

/// Why a handshake that ran out of time failed.
pub(crate) fn too_slow(tls: &Tls) -> String {
    format!("not done within {} s", tls.handshake_time.as_secs_f64())
}

/// The line of a failed handshake: a warning, unless it is a load balancer's health
/// check or one of a flood of them (`refused`).
pub(crate) fn failed_handshake(peer: SocketAddr, check: bool, failed: &str) {
    if check {
        tracing::debug!("TLS handshake with {peer} (a health check) failed: {failed}");
    } else if refused::tally(Reason::TlsHandshake, peer, &failed) {
        tracing::warn!("TLS handshake with {peer} failed: {failed}");
    } else {
        tracing::debug!("TLS handshake with {peer} failed: {failed}");
    }
}

/// Answers everything the client sends, until it closes; then closes with a
/// `close_notify` and a FIN.
async fn echo(
    conn: &mut TlsConn,
    stream: &TcpStream,
    replies: &mut Replies<'_>,
    settings: &Settings,
) -> io::Result<Ending> {
    // The runtime keeps the idle clock on the socket: a read or write of the socket that
    // moves bytes resets it; one that finds nothing to do past it fails with `TimedOut`.
    stream.set_idle_timeout(settings.idle_timeout);
    // Waited on only between replies: what was read is answered before the goodbye.
    let mut stop = std::pin::pin!(coop::stop_requested());
    // What the last step waited for: an idle client is one that sends nothing, or one
    // that takes no reply.
    let mut waited = Step::Read;
    loop {
        waited = match conn.step(stream, replies) {
            Ok(step) => step,
            Err(e) if e.kind() == io::ErrorKind::TimedOut && waited == Step::Write => {
                return Err(serve::took_no_reply(e, settings));
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                conn.close(stream).await?;
                return Ok(Ending::Idle);
            }
            Err(e) => return Err(e),
        };
        match waited {
            Step::Read => {
                let stopped = std::future::poll_fn(|cx| {
                    if stream.poll_read_ready(cx).is_ready() {
                        return Poll::Ready(false);
                    }
                    stop.as_mut().poll(cx).map(|()| true)
                });
                if stopped.await {
                    // A close_notify rather than a cut (the worker gives the goodbyes a
                    // moment before its runtime goes).
                    conn.close(stream).await?;
                    return Ok(Ending::Stopped);
                }
            }
            Step::Write => stream.writable().await?,
            Step::Handshaken => {}
            Step::Ended => break,
        }
    }
    conn.close(stream).await?;
    Ok(Ending::Closed)
}

/// `future`'s output, or `None` if the server stops first.
pub(crate) async fn until_stopped<F: Future>(future: F) -> Option<F::Output> {
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
