//! `serve --admin ADDR`: the runtime and the server, as Prometheus metrics at
//! `GET /metrics`, and whether the server accepts connections at `GET /healthz`.
//!
//! The HTTP side is the least a scraper needs, and no more than that can be abused: one
//! request per connection, its head at most 8 KiB, read within 5 seconds, at most 16
//! admin connections at a time; then `Connection: close`. It runs as tasks on the echo
//! server's own runtime, and nothing it waits for holds the echo service up.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use coop::{Server, ServerHandle, TcpListener, TcpStream};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::serve::{Settings, Totals};

/// The largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint reports on.
#[derive(Debug)]
pub struct Sources {
    /// The echo server's connections.
    pub server: ServerHandle,
    /// The echo server's traffic (its `totals`).
    pub settings: Rc<Settings>,
    /// Messages per second over the last second, kept by [`sample_rate`].
    pub rate: Rc<Cell<f64>>,
    /// Whether the server answers UDP (its counters are reported only then: a zero would
    /// read as "no datagram came" rather than "not listening").
    pub udp: bool,
}

/// Serves `/metrics` on `listener` until the runtime ends.
pub async fn serve(listener: TcpListener, sources: Rc<Sources>) {
    Server::new(listener)
        .max_connections(16)
        .serve(move |stream, _peer| {
            let sources = Rc::clone(&sources);
            async move {
                if let Err(e) = answer(&stream, &sources).await {
                    tracing::debug!("admin: {e}");
                }
            }
        })
        .await;
}

/// Keeps `rate` at the messages per second of the last second.
pub async fn sample_rate(settings: Rc<Settings>, rate: Rc<Cell<f64>>) {
    let totals: &Totals = &settings.totals;
    let mut last = (Instant::now(), totals.messages.get());
    loop {
        coop::time::sleep(Duration::from_secs(1)).await;
        let now = (Instant::now(), totals.messages.get());
        rate.set((now.1 - last.1) as f64 / (now.0 - last.0).as_secs_f64());
        last = now;
    }
}

async fn answer(stream: &TcpStream, sources: &Sources) -> io::Result<()> {
    let head = match coop::time::timeout(REQUEST_TIMEOUT, read_head(stream)).await {
        Ok(head) => head?,
        Err(_) => return respond(stream, "408 Request Timeout", "request timed out\n").await,
    };
    let Some(head) = head else {
        return respond(
            stream,
            "431 Request Header Fields Too Large",
            "request too large\n",
        )
        .await;
    };
    let request_line = head.lines().next().unwrap_or_default();
    let words: Vec<&str> = request_line.split_whitespace().collect();
    let [method, path, version] = words[..] else {
        return respond(stream, "400 Bad Request", "bad request line\n").await;
    };
    if !version.starts_with("HTTP/1.") {
        return respond(stream, "400 Bad Request", "HTTP/1.x only\n").await;
    }
    match (Some(method), Some(path)) {
        (Some("GET"), Some("/metrics")) => {
            let body = metrics(sources);
            respond_with(stream, "200 OK", OPENMETRICS, "", &body).await
        }
        // For load balancers and orchestrators: ready while accepting, not from the moment
        // a graceful stop begins (while open connections still drain).
        (Some(method @ ("GET" | "HEAD")), Some("/healthz")) => {
            let (status, body) = if sources.server.is_stopped() {
                ("503 Service Unavailable", "stopping\n")
            } else {
                ("200 OK", "ok\n")
            };
            // Some checkers ask with HEAD: the same answer, without its body.
            let body = if method == "HEAD" { "" } else { body };
            respond(stream, status, body).await
        }
        (Some("GET"), Some(_)) => {
            respond(stream, "404 Not Found", "try /metrics or /healthz\n").await
        }
        _ => {
            let allow = "Allow: GET, HEAD\r\n";
            respond_with(
                stream,
                "405 Method Not Allowed",
                TEXT,
                allow,
                "GET /metrics, GET or HEAD /healthz only\n",
            )
            .await
        }
    }
}

/// Reads up to the end of the request head; `None` if it is longer than allowed.
async fn read_head(stream: &TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0; 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        let end = head
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|at| at + 4)
            .or_else(|| head.windows(2).position(|w| w == b"\n\n").map(|at| at + 2));
        match end {
            Some(end) if end <= MAX_REQUEST => {
                return Ok(Some(String::from_utf8_lossy(&head[..end]).into_owned()));
            }
            Some(_) => return Ok(None),
            None if head.len() > MAX_REQUEST => return Ok(None),
            None => {}
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

async fn respond(stream: &TcpStream, status: &str, body: &str) -> io::Result<()> {
    respond_with(stream, status, TEXT, "", body).await
}

/// Sends one response (`headers`: extra header lines, each ending in CRLF) and closes.
async fn respond_with(
    stream: &TcpStream,
    status: &str,
    content_type: &str,
    headers: &str,
    body: &str,
) -> io::Result<()> {
    let mut response = String::with_capacity(body.len() + 128);
    let _ = write!(
        response,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// The snapshot, in the Prometheus text format.
fn metrics(sources: &Sources) -> String {
    let mut registry = Registry::default();
    let server = &sources.server;
    let totals = &sources.settings.totals;
    let mut gauges = vec![(
        "echo_connections_open",
        "Connections being served",
        server.open_connections() as i64,
    )];
    if let Some(stats) = coop::stats() {
        gauges.extend([
            ("coop_tasks", "Live tasks", stats.tasks as i64),
            (
                "coop_tasks_ready",
                "Tasks in the ready queue",
                stats.ready as i64,
            ),
            ("coop_sockets", "Registered sockets", stats.sockets as i64),
            ("coop_timers", "Pending timers", stats.timers as i64),
        ]);
        let parked = Family::<Vec<(String, String)>, Gauge<i64>>::default();
        for (area, count) in [("read", stats.parked_read), ("write", stats.parked_write)] {
            parked
                .get_or_create(&vec![("area".to_string(), area.to_string())])
                .set(count as i64);
        }
        registry.register(
            "coop_tasks_parked",
            "Tasks waiting in a socket's read or write waiting area",
            parked,
        );
    }
    let mut counters = vec![
        (
            "echo_connections",
            "Connections accepted",
            server.total_connections(),
        ),
        (
            "echo_bytes_in",
            "Bytes read from clients",
            totals.bytes_in.get(),
        ),
        (
            "echo_bytes_out",
            "Bytes written to clients",
            totals.bytes_out.get(),
        ),
        (
            "echo_messages_in",
            "Reads that returned data",
            totals.messages.get(),
        ),
    ];
    if sources.udp {
        counters.extend([
            (
                "echo_udp_received",
                "UDP datagrams received",
                totals.udp_in.get(),
            ),
            (
                "echo_udp_answered",
                "UDP datagrams answered",
                totals.udp_out.get(),
            ),
            (
                "echo_udp_refused",
                "UDP datagrams left unanswered by the rate limit (--udp-rate)",
                totals.udp_refused.get(),
            ),
        ]);
    }
    for (name, help, value) in gauges {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
    for (name, help, value) in counters {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        registry.register(name, help, counter);
    }
    let rate = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    rate.set(sources.rate.get());
    registry.register(
        "echo_messages_per_second",
        "Reads per second, over the last second",
        rate,
    );
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}
