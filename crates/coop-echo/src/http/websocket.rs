//! A WebSocket upgrade on any path, and its echo: every message back as it came (text as
//! text, binary as binary), pings answered, the close handshake completed, by
//! tungstenite. No prefix: a WebSocket echo is exact, or conformance clients reject it.

use std::io;
use std::pin::pin;
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

use super::Shared;
use super::body::Reply;
use super::routes::Connection;
use crate::serve::Ending;

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
/// client closes, the connection fails or falls silent, or the server's deadline comes
/// (close code 1001).
pub(super) async fn echo<I>(
    io: I,
    leftover: Bytes,
    connection: &Connection,
    shared: &Shared,
) -> io::Result<Ending>
where
    I: AsyncRead + AsyncWrite + Unpin,
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
        if let Err(e) = ws.send(message).await {
            return match e {
                Error::ConnectionClosed | Error::AlreadyClosed => Ok(Ending::Closed),
                Error::Io(e) if e.kind() == io::ErrorKind::TimedOut => Ok(Ending::Idle),
                e => Err(io::Error::other(format!("WebSocket: {e}"))),
            };
        }
        connection.gave(shared, size);
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
