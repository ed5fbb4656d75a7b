//! `coop-echo client`: talk to an echo server without nc (the seed's `telnetlib` line,
//! which Python 3.13 no longer has).
//!
//! Lines from stdin go to the server one at a time: the next one leaves when the reply to
//! the last one (a newline) has come back, or after a second without one. So
//! `printf 'Hello\nWorld\n' | coop-echo client` gets two replies, `GOT:Hello` and
//! `GOT:World`, as a person typing would, and not one reply to both lines. At the end of
//! stdin the client shuts down its side, prints what is still coming, and exits once the
//! server has closed.
//!
//! The server is given as `localhost`, `localhost:25000`, `localhost 25000`,
//! `127.0.0.1:25000`, `[::1]:25000` or `::1 25000`; names are resolved by the system.

use std::cell::Cell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::proxy::{self, SendProxy};
use crate::service::fail;
use coop::TcpStream;
use coop::time::{sleep, timeout};
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::tls::{ClientTls, HANDSHAKE_TIME};

/// How long a line waits for the reply to the one before.
const LOCKSTEP: Duration = Duration::from_secs(1);

/// The port a client talks to when it is given none.
pub const DEFAULT_PORT: u16 = 25000;

/// The server to talk to, as `HOST:PORT` text that [`ToSocketAddrs`] resolves, from
/// what the user typed: `HOST` (a name, an IPv4 address, an IPv6 address bare or in
/// brackets), `HOST:PORT` or `[IPV6]:PORT`, and the port apart as `port`.
pub fn target(host: &str, port: Option<u16>) -> Result<String, String> {
    use std::net::{IpAddr, SocketAddr};
    let twice = || {
        Err(format!(
            "'{host}' already gives a port: leave out the second one"
        ))
    };
    if host.parse::<SocketAddr>().is_ok() {
        return if port.is_some() {
            twice()
        } else {
            Ok(host.to_string())
        };
    }
    let port_or_default = port.unwrap_or(DEFAULT_PORT);
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => return Ok(format!("[{ip}]:{port_or_default}")),
        Ok(IpAddr::V4(ip)) => return Ok(format!("{ip}:{port_or_default}")),
        Err(_) => {}
    }
    match host.rsplit_once(':') {
        Some(_) if port.is_some() => twice(),
        Some((name, given)) => match given.parse::<u16>() {
            Ok(_) if !name.is_empty() && !name.contains(':') => Ok(host.to_string()),
            _ => Err(format!("'{host}' is not HOST, HOST:PORT or [IPV6]:PORT")),
        },
        None if host.is_empty() => Err("the host is empty".to_string()),
        None => Ok(format!("{host}:{port_or_default}")),
    }
}

/// Connects to `target` (see [`target`]) and relays stdin and stdout until the server
/// closes; over TLS with `tls`.
pub fn run(target: &str, send_proxy: Option<SendProxy>, tls: Option<ClientTls>) -> ExitCode {
    let runtime = match coop::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(format_args!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async {
        let addrs = match target.to_socket_addrs() {
            Ok(addrs) => addrs.collect::<Vec<_>>(),
            Err(e) => return fail(format_args!("cannot resolve {target}: {e}")),
        };
        let stream = match timeout(Duration::from_secs(10), TcpStream::connect(&addrs[..])).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return fail(format_args!("cannot connect to {target}: {e}")),
            Err(_) => return fail(format_args!("cannot connect to {target}: timed out")),
        };
        let _ = stream.set_nodelay(true);
        if let Some(version) = send_proxy {
            if let Err(e) = proxy::send_header(&stream, version).await {
                return fail(format_args!("connection to {target}: {e}"));
            }
        }
        let relayed = match tls {
            None => relay(&stream, &stream, true).await,
            Some(ClientTls { config, name }) => {
                let connector = futures_rustls::TlsConnector::from(config);
                let session = match timeout(HANDSHAKE_TIME, connector.connect(name, &stream)).await
                {
                    Ok(Ok(session)) => session,
                    Ok(Err(e)) => {
                        return fail(format_args!(
                            "TLS handshake with {target}: {}",
                            crate::tls::client_failure(&e)
                        ));
                    }
                    Err(_) => {
                        return fail(format_args!("TLS handshake with {target}: timed out"));
                    }
                };
                let (reader, writer) = session.split();
                relay(reader, writer, false).await
            }
        };
        match relayed {
            Ok(0) => ExitCode::SUCCESS,
            // A line that got no reply is a lost message, not a success.
            Ok(unanswered) => fail(format_args!(
                "the server closed the connection; {} got no reply",
                crate::plural::count(unanswered, "line")
            )),
            Err(e) => fail(format_args!("connection to {target}: {e}")),
        }
    })
}

/// Relays until the server closes (`reader` ends); returns how many of the lines sent got
/// no reply. At the end of stdin, `writer` is closed: the server reads EOF. On a `plain`
/// connection, a first reply that is a TLS record is an error, and is not printed.
async fn relay(
    mut reader: impl AsyncRead + Unpin,
    mut writer: impl AsyncWrite + Unpin,
    plain: bool,
) -> io::Result<u64> {
    let input = Stdin::spawn();
    let replies = Cell::new(0u64);
    // Lines sent: the sending side counts them, the end compares them with the replies.
    let lines = Cell::new(0u64);
    let parked = Cell::new(None::<Waker>);
    // Waits until the replies have caught up with the lines sent (or for a second).
    let caught_up = |sent: u64| {
        let mut patience = sleep(LOCKSTEP);
        let (replies, parked) = (&replies, &parked);
        std::future::poll_fn(move |cx| {
            if replies.get() >= sent || Pin::new(&mut patience).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            parked.set(Some(cx.waker().clone()));
            Poll::Pending
        })
    };
    let send = async {
        // The start of a line whose end has not come yet.
        let mut buffered = Vec::new();
        loop {
            let Some(chunk) = input.next().await else {
                if !buffered.is_empty() {
                    caught_up(lines.get()).await;
                    writer.write_all(&buffered).await?;
                }
                return writer.close().await;
            };
            // Only the new bytes are looked through: `buffered` holds no newline, and
            // looking through it again at every chunk made a long line cost its square.
            let mut line_start = 0;
            for end in memchr::memchr_iter(b'\n', &chunk) {
                // One line at a time, each after the reply to the last.
                caught_up(lines.get()).await;
                if buffered.is_empty() {
                    writer.write_all(&chunk[line_start..=end]).await?;
                } else {
                    buffered.extend_from_slice(&chunk[line_start..=end]);
                    writer.write_all(&buffered).await?;
                    buffered.clear();
                }
                writer.flush().await?;
                line_start = end + 1;
                lines.set(lines.get() + 1);
            }
            buffered.extend_from_slice(&chunk[line_start..]);
        }
    };
    let receive = async {
        let mut buf = vec![0; 16 * 1024];
        let mut stdout = io::stdout();
        let mut first = plain;
        loop {
            let n = match reader.read(&mut buf).await {
                // A TLS server that closed without a close_notify: the end all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                read => read?,
            };
            if n == 0 {
                return io::Result::Ok(());
            }
            if std::mem::take(&mut first) && crate::tls::is_tls_record(&buf[..n]) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    crate::tls::SPEAKS_TLS,
                ));
            }
            stdout.write_all(&buf[..n])?;
            stdout.flush()?;
            let newlines = memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
            replies.set(replies.get() + newlines);
            if let Some(waker) = parked.take() {
                waker.wake();
            }
        }
    };
    // Done when the server closes (it has answered everything), whatever stdin does.
    let mut send = std::pin::pin!(send);
    let mut receive = std::pin::pin!(receive);
    let mut sending = true;
    std::future::poll_fn(|cx| {
        if sending {
            if let Poll::Ready(sent) = send.as_mut().poll(cx) {
                sending = false;
                sent?;
            }
        }
        receive.as_mut().poll(cx)
    })
    .await?;
    let unanswered = lines.get().saturating_sub(replies.get());
    if sending && unanswered == 0 {
        eprintln!("coop-echo: the server closed the connection");
    }
    Ok(unanswered)
}

/// Stdin, read by a thread of its own (a terminal cannot be made non-blocking without
/// disturbing the shell that shares it), handed to the runtime through a queue whose
/// waker the thread wakes: a cross-thread wake, through coop's inbox.
struct Stdin {
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    chunks: VecDeque<Vec<u8>>,
    ended: bool,
    waiter: Option<Waker>,
}

impl Stdin {
    fn spawn() -> Stdin {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let feed = Arc::clone(&shared);
        std::thread::spawn(move || {
            let mut stdin = io::stdin().lock();
            let mut buf = vec![0; 16 * 1024];
            loop {
                let chunk = match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => None,
                    Ok(n) => Some(buf[..n].to_vec()),
                };
                let ended = chunk.is_none();
                let waiter = {
                    let mut shared = feed.lock().unwrap_or_else(PoisonError::into_inner);
                    match chunk {
                        Some(bytes) => shared.chunks.push_back(bytes),
                        None => shared.ended = true,
                    }
                    shared.waiter.take()
                };
                if let Some(waiter) = waiter {
                    waiter.wake();
                }
                if ended {
                    return;
                }
            }
        });
        Stdin { shared }
    }

    /// The next chunk of stdin; `None` at its end.
    async fn next(&self) -> Option<Vec<u8>> {
        std::future::poll_fn(|cx| {
            let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(chunk) = shared.chunks.pop_front() {
                return Poll::Ready(Some(chunk));
            }
            if shared.ended {
                return Poll::Ready(None);
            }
            shared.waiter = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_of_the_address_reads_the_same() {
        for (host, port, want) in [
            ("localhost", None, "localhost:25000"),
            ("localhost", Some(7), "localhost:7"),
            ("localhost:7", None, "localhost:7"),
            ("127.0.0.1", Some(7), "127.0.0.1:7"),
            ("127.0.0.1:7", None, "127.0.0.1:7"),
            ("::1", Some(7), "[::1]:7"),
            ("[::1]", Some(7), "[::1]:7"),
            ("[::1]:7", None, "[::1]:7"),
            ("::1", None, "[::1]:25000"),
        ] {
            assert_eq!(target(host, port).as_deref(), Ok(want), "{host} {port:?}");
        }
        for (host, port) in [
            ("localhost:7", Some(8)),
            ("[::1]:7", Some(8)),
            ("localhost:http", None),
            ("localhost:99999", None),
            (":7", None),
            ("", None),
        ] {
            assert!(target(host, port).is_err(), "{host} {port:?}");
        }
    }
}
