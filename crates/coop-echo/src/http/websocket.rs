//! A WebSocket upgrade on any path, and its echo: every message back as it came (text as
//! text, binary as binary), pings answered, the close handshake completed, by
//! tungstenite. No prefix: a WebSocket echo is exact, or conformance clients reject it.

use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_tungstenite::WebSocketStream;
use async_tungstenite::tungstenite::handshake::derive_accept_key;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use async_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use async_tungstenite::tungstenite::{Error, Message};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use futures_util::io::{AsyncRead, AsyncWrite};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use super::body::Reply;
use super::routes::Connection;
use super::{Shared, Socket};
use crate::fault::{self, Fault, Plan, Table};
use crate::serve::Ending;
use coop::net::TcpStream;

/// Bytes tungstenite reads at a time: small, so that an idle WebSocket holds little.
const READ_BUFFER: usize = 4096;

/// How long, after our close frame, the client has to answer with its own.
const CLOSE_TIME: Duration = Duration::from_secs(1);

/// Whether the request asks for a WebSocket (`Upgrade: websocket`).
pub(super) fn wanted(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

/// The 101 that accepts a WebSocket upgrade, or why not (the status and one line).
pub(super) fn accept(
    request: &Request<Incoming>,
    h2: bool,
) -> Result<Response<Reply>, (StatusCode, &'static str)> {
    let headers = request.headers();
    if h2 {
        return Err((
            StatusCode::BAD_REQUEST,
            "WebSocket is offered over HTTP/1.1 only",
        ));
    }
    if request.method() != Method::GET {
        return Err((StatusCode::BAD_REQUEST, "a WebSocket upgrade is a GET"));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Connection: Upgrade",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v != "13")
    {
        return Err((
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket version 13 only (Sec-WebSocket-Version: 13)",
        ));
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|key| {
            base64::engine::general_purpose::STANDARD
                .decode(key.as_bytes())
                .is_ok_and(|k| k.len() == 16)
        })
        .ok_or((
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs a Sec-WebSocket-Key of 16 bytes in base64",
        ))?;
    let accepted = HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
        .map_err(|_| (StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key"))?;
    let mut response = Response::new(Reply::Full(None));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(header::SEC_WEBSOCKET_ACCEPT, accepted);
    // No Sec-WebSocket-Extensions: permessage-deflate is declined (RFC 6455 9.1).
    Ok(response)
}

/// Whether a comma-separated header has `token` (any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Counts a WebSocket connection open while it lives.
struct Open<'a>(&'a Shared);

impl<'a> Open<'a> {
    fn new(shared: &'a Shared) -> Open<'a> {
        super::add(&shared.totals.ws_open, 1);
        super::add(&shared.totals.ws_total, 1);
        Open(shared)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let open = &self.0.totals.ws_open;
        open.set(open.get() - 1);
    }
}

/// Echoes messages on `io` (`leftover`: what hyper read past the upgrade) until the
/// client closes, the connection fails or falls silent, the server's deadline comes
/// (close code 1001), or a fault (`--fault`, drawn now for `client`) ends it.
pub(super) async fn echo<I>(
    io: I,
    leftover: Bytes,
    connection: &Connection,
    shared: &Shared,
    client: SocketAddr,
) -> io::Result<Ending>
where
    I: AsyncRead + AsyncWrite + Socket + Unpin,
{
    let max = shared.config.ws_max_message;
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // A copy of the few bytes: `leftover` shares all of hyper's read buffer.
    let part = leftover.to_vec();
    drop(leftover);
    let mut ws = WebSocketStream::from_partially_read(io, part, Role::Server, Some(config)).await;
    let _open = Open::new(shared);
    let mut faults = shared.faults.as_ref().and_then(|table| {
        let plan = table.draw()?;
        tracing::debug!("Faults for {client} (WebSocket): {}", plan.describe());
        Some(Faults {
            plan,
            table: Arc::clone(table),
            client,
            sent: 0,
        })
    });
    let mut stop = pin!(coop::stop_requested());
    loop {
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(next) = ws.poll_next_unpin(cx) {
                return Poll::Ready(Some(next));
            }
            stop.as_mut().poll(cx).map(|()| None)
        })
        .await;
        let message = match next {
            None => {
                goodbye(&mut ws, CloseCode::Away, "the server is stopping").await;
                return Ok(Ending::Stopped);
            }
            // The close handshake is done (tungstenite answered the client's close).
            Some(None) => return Ok(Ending::Closed),
            Some(Some(Ok(message))) => message,
            Some(Some(Err(e))) => {
                let (code, why) = match &e {
                    Error::ConnectionClosed | Error::AlreadyClosed => return Ok(Ending::Closed),
                    Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => {
                        return Ok(Ending::Idle);
                    }
                    Error::Io(e) => return Err(io::Error::new(e.kind(), e.to_string())),
                    Error::Capacity(_) => (CloseCode::Size, "message too large"),
                    Error::Utf8(_) => (CloseCode::Invalid, "text that is not UTF-8"),
                    _ => (CloseCode::Protocol, "protocol error"),
                };
                goodbye(&mut ws, code, why).await;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("WebSocket closed with {}: {e}", u16::from(code)),
                ));
            }
        };
        let size = match &message {
            Message::Text(text) => text.len(),
            Message::Binary(data) => data.len(),
            // Pings are answered by tungstenite; pongs and a close need nothing of us.
            _ => continue,
        };
        super::add(&shared.totals.ws_messages, 1);
        connection.took(shared, size);
        let mut message = message;
        let mut cut = None;
        if let Some(faults) = &mut faults {
            match faults
                .before(message, ws.get_ref().socket(), shared.idle_timeout)
                .await
            {
                (Some(kept), then) => (message, cut) = (kept, then),
                (None, then) => return Ok(faults.cut(ws.get_ref().socket(), then, shared).await),
            }
        }
        let size = payload(&message);
        if let Err(e) = ws.send(message).await {
            return match e {
                Error::ConnectionClosed | Error::AlreadyClosed => Ok(Ending::Closed),
                Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => Ok(Ending::Idle),
                e => Err(io::Error::other(format!("WebSocket: {e}"))),
            };
        }
        connection.gave(shared, size);
        if let Some(faults) = &mut faults {
            faults
                .after(size, ws.get_ref().socket(), shared.idle_timeout)
                .await;
            if cut.is_some() {
                return Ok(faults.cut(ws.get_ref().socket(), cut, shared).await);
            }
        }
    }
}

/// A message's payload bytes.
fn payload(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(data) => data.len(),
        _ => 0,
    }
}

/// A WebSocket's faults: its plan, and the payload bytes sent so far.
struct Faults {
    plan: Plan,
    table: Arc<Table>,
    client: SocketAddr,
    sent: u64,
}

impl Faults {
    /// Holds the reply `message` as the plan says, and cuts it where a cut falls: the
    /// message to send (`None`: nothing more goes), and the cut to make after it.
    async fn before(
        &mut self,
        message: Message,
        socket: &TcpStream,
        idle: Option<Duration>,
    ) -> (Option<Message>, Option<Fault>) {
        if let Some(held) = self.plan.next_delay() {
            self.table
                .acted_kind("delay", self.client, &format!("message held {held:?}"));
            coop::time::sleep(held).await;
            // The server's own hold is not the client's silence.
            socket.set_idle_timeout(idle);
        }
        let Some((at, fault)) = self.plan.cut else {
            return (Some(message), None);
        };
        let room = usize::try_from(at.saturating_sub(self.sent)).unwrap_or(usize::MAX);
        if payload(&message) < room {
            return (Some(message), None);
        }
        // The first `room` payload bytes go (as whole characters, in a text), then the cut.
        let kept = match message {
            Message::Text(text) => {
                let mut end = room;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                Message::Text(text.as_str()[..end].into())
            }
            Message::Binary(data) => Message::Binary(data.slice(..room)),
            other => other,
        };
        if payload(&kept) == 0 {
            return (None, Some(fault));
        }
        (Some(kept), Some(fault))
    }

    /// Counts what went, and paces the next message as the throttle says.
    async fn after(&mut self, size: usize, socket: &TcpStream, idle: Option<Duration>) {
        self.sent += size as u64;
        if let Some(rate) = self.plan.throttle {
            if self.sent == size as u64 {
                self.table.acted_kind(
                    "throttle",
                    self.client,
                    &format!("messages at {rate} bytes/s"),
                );
            }
            coop::time::sleep(Duration::from_secs_f64(size as f64 / rate as f64)).await;
            socket.set_idle_timeout(idle);
        }
    }

    /// Ends the connection as the cut says (`None`: nothing to cut). A close is a FIN
    /// with no close frame: the connection just ends.
    async fn cut(&self, socket: &TcpStream, cut: Option<Fault>, shared: &Shared) -> Ending {
        let Some(fault) = cut else {
            return Ending::Closed;
        };
        let at = self.plan.cut.map_or(0, |(at, _)| at);
        let close = async { socket.shutdown(std::net::Shutdown::Both) };
        let idle = shared.idle_timeout;
        fault::tcp::cut(&self.table, self.client, socket, idle, fault, at, close)
            .await
            .unwrap_or(Ending::Closed)
    }
}

/// Sends a close frame with `code`, and waits a moment for the client's.
async fn goodbye<I>(ws: &mut WebSocketStream<I>, code: CloseCode, why: &str)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: why.into(),
    };
    let closed = async {
        if ws.close(Some(frame)).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    };
    let _ = coop::time::timeout(CLOSE_TIME, closed).await;
}
