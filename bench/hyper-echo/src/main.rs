//! The peer of `coop-echo serve --http` in the HTTP and WebSocket section of
//! `bench/compare`: the same hyper (and the same tungstenite) on tokio's current-thread
//! runtime, the way their own examples put them together, with the same answers.
//!
//! - HTTP/1.1 with keep-alive: `/echo` (any method) answers 200 with the request's body
//!   streamed back as it comes (`Response::new(request.into_body())`), its
//!   `Content-Type` copied; any other path 404.
//! - A request with `Upgrade: websocket` (any path) gets its 101 through hyper's upgrade,
//!   then tokio-tungstenite echoes each text and binary message exactly; tungstenite
//!   answers pings and the close.
//!
//! hyper's HTTP/1 settings and tungstenite's buffers are coop-echo's (`--http`'s
//! `speak` and `websocket::echo`): a 10 s limit on a request head (with tokio's timer,
//! as coop-echo's has coop's), a 16 KiB head, a 4 KiB WebSocket read buffer, no write
//! buffering. No HTTP/2: the section measures HTTP/1.1.
//!
//! `hyper-echo ADDR` (e.g. `127.0.0.1:0`); prints `Listening on ADDR` to stderr, as
//! tokio-echo does, where `bench/compare` looks for it.

use std::convert::Infallible;
use std::io::{self, Write as _};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

/// coop-echo's `http::HEAD_TIME`: a request head must come within this long.
const HEAD_TIME: Duration = Duration::from_secs(10);
/// coop-echo's `http::MAX_HEAD`.
const MAX_HEAD: usize = 16 * 1024;
/// coop-echo's `http::WS_MAX_MESSAGE`.
const WS_MAX_MESSAGE: usize = 16 << 20;
/// coop-echo's WebSocket read buffer.
const WS_READ_BUFFER: usize = 4096;

type Body = Either<Incoming, Empty<Bytes>>;

fn main() -> io::Result<()> {
    let addr = match std::env::args().nth(1) {
        Some(addr) if std::env::args().len() == 2 => addr,
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "usage: hyper-echo ADDR (e.g. 127.0.0.1:0)",
            ));
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr.as_str()).await?;
        let mut stderr = io::stderr();
        writeln!(stderr, "Listening on {}", listener.local_addr()?)?;
        stderr.flush()?;
        loop {
            // Ride out accept errors (a reset in the queue, EMFILE) instead of ending.
            let Ok((stream, _)) = listener.accept().await else {
                tokio::task::yield_now().await;
                continue;
            };
            tokio::spawn(connection(stream));
        }
    })
}

/// Serves one client until it closes: HTTP/1.1 requests, then a WebSocket if one
/// upgraded (in a task of its own, as `hyper::upgrade::on` has it).
async fn connection(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIME)
        .max_buf_size(MAX_HEAD.max(8192) * 4)
        .max_header_size(MAX_HEAD);
    let _ = builder
        .serve_connection(TokioIo::new(stream), service_fn(answer))
        .with_upgrades()
        .await;
}

/// One request's answer.
async fn answer(mut request: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    if has_token(request.headers(), header::UPGRADE, "websocket") {
        return Ok(upgrade(&mut request));
    }
    if request.uri().path() != "/echo" {
        return Ok(status(StatusCode::NOT_FOUND));
    }
    let kind = request.headers().get(header::CONTENT_TYPE).cloned();
    let mut response = Response::new(Either::Left(request.into_body()));
    if let Some(kind) = kind {
        response.headers_mut().insert(header::CONTENT_TYPE, kind);
    }
    Ok(response)
}

/// The 101 for a WebSocket upgrade (400 for a bad one), and the echo's task.
fn upgrade(request: &mut Request<Incoming>) -> Response<Body> {
    let headers = request.headers();
    let version_13 = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| version_13)
    else {
        return status(StatusCode::BAD_REQUEST);
    };
    let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) else {
        return status(StatusCode::BAD_REQUEST);
    };
    let upgraded = hyper::upgrade::on(request);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgraded.await {
            echo(TokioIo::new(upgraded)).await;
        }
    });
    let mut response = status(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    response
}

/// Echoes each text and binary message until the client closes or the connection fails.
async fn echo(io: TokioIo<hyper::upgrade::Upgraded>) {
    let config = WebSocketConfig::default()
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(WS_MAX_MESSAGE))
        .max_frame_size(Some(WS_MAX_MESSAGE));
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            break;
        }
    }
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = code;
    response
}

/// Whether a comma-separated header has `token` (any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}
