//! `serve --admin ADDR`: the runtime and the server, as Prometheus metrics at
//! `GET /metrics`; whether the server accepts connections at `GET /healthz` (which `PUT
//! /healthz` can make fail on purpose); the faults in force at `/faults` (`GET`, `PUT`
//! with SPEC lines, `DELETE`).
//!
//! The HTTP side is the least a scraper needs, and no more than that can be abused: one
//! request per connection, its head at most 8 KiB and its body 64 KiB, read within 5
//! seconds; then
//! `Connection: close`. At most 64 admin connections are kept; past that, the oldest
//! one still waiting for its request is let go, so that a load balancer's probe is
//! answered at once whatever other clients of the address do (a client that connects
//! and says nothing must not make `/healthz` wait). It runs as tasks of the program's
//! main thread (serving thread 0), which asks each serving thread for its figures at
//! each scrape: nothing it waits for holds the echo service up.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coop::{JoinHandle, TcpListener, TcpStream};
use futures_util::future::LocalBoxFuture;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::fault::{self, Spec};
use crate::http;
use crate::snapshot::Snapshot;

/// The largest request head accepted.
const MAX_REQUEST: usize = 8 * 1024;
/// The largest request body accepted (`PUT /faults`'s SPEC lines).
const MAX_BODY: usize = 64 * 1024;
/// How long a client has to send its request (and, again, to take the response).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections kept at once. Each costs a descriptor and a few KiB; a scraper or
/// a probe needs one for a few milliseconds, so 64 is room for many of them.
const MAX_CONNECTIONS: usize = 64;
/// How long the accept loop waits when the process is out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Every serving thread's figures, in thread order, as the service gathers them: the
/// admin side reads figures without knowing the threads that keep them.
pub struct Gather(pub Box<dyn Fn() -> LocalBoxFuture<'static, Vec<Snapshot>>>);

impl std::fmt::Debug for Gather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Gather")
    }
}

/// What the endpoint reports on.
#[derive(Debug)]
pub struct Sources {
    /// Asks every serving thread for its figures, at each scrape.
    pub gather: Rc<Gather>,
    /// The server is stopping (a signal came): `/healthz` says so.
    pub stopping: Rc<Cell<bool>>,
    /// Messages per second over the last second, kept by [`sample_rate`].
    pub rate: Rc<Cell<f64>>,
    /// Whether the server answers UDP (its counters are reported only then: a zero would
    /// read as "no datagram came" rather than "not listening").
    pub udp: bool,
    /// Whether `--http` serves (and its figures are reported).
    pub http: bool,
    /// The faults in force, which `/faults` shows and sets.
    pub faults: Option<Arc<fault::Table>>,
    /// Set by `PUT /healthz` with `503`: the health answer fails while the server
    /// goes on serving.
    pub failing: Cell<bool>,
}

/// An admin connection being served.
struct Held {
    task: JoinHandle<()>,
    /// Still waiting for its request: the first to go when room is needed.
    reading: Rc<Cell<bool>>,
}

/// Serves `/metrics` and `/healthz` on `listener` until the runtime ends.
pub async fn serve(listener: TcpListener, sources: Rc<Sources>) {
    let held: RefCell<VecDeque<Held>> = RefCell::new(VecDeque::new());
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // A client gone before it was accepted concerns no one; out of
                // descriptors, wait a little rather than spin (the echo goes on).
                tracing::debug!("admin: cannot accept: {e}");
                coop::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let mut held = held.borrow_mut();
        held.retain(|h| !h.task.is_finished());
        if held.len() >= MAX_CONNECTIONS {
            let oldest = held
                .iter()
                .position(|h| h.reading.get())
                .unwrap_or_default();
            if let Some(gone) = held.remove(oldest) {
                gone.task.abort();
                tracing::debug!("admin: {MAX_CONNECTIONS} connections open: the oldest let go");
            }
        }
        let reading = Rc::new(Cell::new(true));
        let sources = Rc::clone(&sources);
        let flag = Rc::clone(&reading);
        let task = coop::spawn(async move {
            if let Err(e) = answer(&stream, &sources, &flag).await {
                tracing::debug!("admin: {e}");
            }
        });
        held.push_back(Held { task, reading });
    }
}

/// Keeps `rate` at the messages per second of the last second, over every thread.
pub async fn sample_rate(gather: Rc<Gather>, rate: Rc<Cell<f64>>) {
    let messages = || async { Snapshot::sum(&(gather.0)().await).messages };
    let mut last = (Instant::now(), messages().await);
    loop {
        coop::time::sleep(Duration::from_secs(1)).await;
        let now = (Instant::now(), messages().await);
        rate.set(now.1.saturating_sub(last.1) as f64 / (now.0 - last.0).as_secs_f64());
        last = now;
    }
}

/// A response: status, content type, extra header lines (each ending in CRLF), body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    headers: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: &str) -> Response {
        Response {
            status,
            content_type: TEXT,
            headers: "",
            body: body.to_string(),
        }
    }
}

/// Reads one request and answers it (`reading` is cleared once the request is in).
async fn answer(stream: &TcpStream, sources: &Sources, reading: &Cell<bool>) -> io::Result<()> {
    let (response, head_only) =
        match coop::time::timeout(REQUEST_TIMEOUT, read_request(stream)).await {
            Ok(request) => {
                reading.set(false);
                match request? {
                    Ok((head, body)) => route(&head, &body, sources).await,
                    Err(response) => (response, false),
                }
            }
            Err(_) => (
                Response::text("408 Request Timeout", "request timed out\n"),
                false,
            ),
        };
    // A client that takes no response holds its connection no longer than one that
    // sends no request.
    match coop::time::timeout(REQUEST_TIMEOUT, respond(stream, &response, head_only)).await {
        Ok(sent) => sent,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no response",
        )),
    }
}

/// The response to the request `head` (with `body`), and whether it goes without its
/// body (HEAD).
async fn route(head: &str, body: &[u8], sources: &Sources) -> (Response, bool) {
    let request_line = head.lines().next().unwrap_or_default();
    let words: Vec<&str> = request_line.split_whitespace().collect();
    let [method, path, version] = words[..] else {
        return (
            Response::text("400 Bad Request", "bad request line\n"),
            false,
        );
    };
    if !version.starts_with("HTTP/1.") {
        return (Response::text("400 Bad Request", "HTTP/1.x only\n"), false);
    }
    // A HEAD is answered as its GET would be, headers and all, without the body.
    let head_only = method == "HEAD";
    let response = match (method, path) {
        ("GET", "/metrics") => {
            let threads = (sources.gather.0)().await;
            Response {
                status: "200 OK",
                content_type: OPENMETRICS,
                headers: "",
                body: metrics(sources, &threads),
            }
        }
        // For load balancers and orchestrators: ready while accepting, not from the moment
        // a graceful stop begins (while open connections still drain).
        ("GET" | "HEAD", "/healthz") => {
            if sources.stopping.get() {
                Response::text("503 Service Unavailable", "stopping\n")
            } else if sources.failing.get() {
                Response::text("503 Service Unavailable", "failing (PUT /healthz)\n")
            } else {
                Response::text("200 OK", "ok\n")
            }
        }
        ("PUT", "/healthz") => match String::from_utf8_lossy(body).trim() {
            code @ ("503" | "200") => {
                sources.failing.set(code == "503");
                tracing::info!("/healthz now answers {code} (PUT /healthz)");
                Response::text("200 OK", &format!("/healthz now answers {code}\n"))
            }
            other => Response::text(
                "400 Bad Request",
                &format!("'{other}': give 503 (fail) or 200 (answer again)\n"),
            ),
        },
        (_, "/faults") => faults(method, body, sources),
        ("GET", _) => Response::text("404 Not Found", "try /metrics, /healthz or /faults\n"),
        _ => Response {
            status: "405 Method Not Allowed",
            content_type: TEXT,
            headers: "Allow: GET, HEAD, PUT, DELETE\r\n",
            body: "GET /metrics; GET, HEAD or PUT /healthz; GET, PUT or DELETE /faults\n"
                .to_string(),
        },
    };
    (response, head_only)
}

/// `/faults`: what is in force (`GET`), replaced by the SPEC lines of the body (`PUT`:
/// all of them or, if one is bad, none), or cleared (`DELETE`). A change holds for
/// connections accepted from then on.
fn faults(method: &str, body: &[u8], sources: &Sources) -> Response {
    let Some(table) = &sources.faults else {
        return Response::text("404 Not Found", "no faults here\n");
    };
    match method {
        "GET" => {}
        "PUT" => {
            let text = String::from_utf8_lossy(body);
            let specs: Result<Vec<Spec>, String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty() && !line.starts_with('#'))
                .map(str::parse)
                .collect();
            match specs {
                Ok(specs) => {
                    let said: Vec<String> = specs.iter().map(ToString::to_string).collect();
                    tracing::info!("Faults now: {}", listed(&said));
                    table.replace(specs);
                }
                Err(why) => return Response::text("400 Bad Request", &format!("{why}\n")),
            }
        }
        "DELETE" => {
            tracing::info!("Faults now: {}", listed(&[]));
            table.replace(Vec::new());
        }
        _ => {
            return Response {
                status: "405 Method Not Allowed",
                content_type: TEXT,
                headers: "Allow: GET, PUT, DELETE\r\n",
                body: "GET, PUT or DELETE /faults\n".to_string(),
            };
        }
    }
    let specs: Vec<String> = table.specs().iter().map(ToString::to_string).collect();
    let applied: serde_json::Map<String, serde_json::Value> = fault::KINDS
        .iter()
        .zip(table.applied())
        .map(|(kind, n)| (kind.to_string(), n.into()))
        .collect();
    let mut body = serde_json::json!({ "faults": specs, "applied": applied }).to_string();
    body.push('\n');
    Response {
        status: "200 OK",
        content_type: "application/json",
        headers: "",
        body,
    }
}

/// SPECs, for a log line.
fn listed(specs: &[String]) -> String {
    if specs.is_empty() {
        "none".to_string()
    } else {
        specs.join(", ")
    }
}

/// Reads a request: its head, then as many body bytes as its `Content-Length` says. The
/// inner `Err` is the response to one too large.
async fn read_request(stream: &TcpStream) -> io::Result<Result<(String, Vec<u8>), Response>> {
    let (head, mut body) = match read_head(stream).await? {
        Some(request) => request,
        None => {
            return Ok(Err(Response::text(
                "431 Request Header Fields Too Large",
                "request too large\n",
            )));
        }
    };
    let header = |wanted: &str| {
        head.lines()
            .filter_map(|line| line.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim())
    };
    // A body this side cannot read (chunked) must not pass for an empty one: an empty
    // `PUT /faults` clears them all.
    if header("transfer-encoding").is_some() {
        return Ok(Err(Response::text(
            "411 Length Required",
            "send the body with a Content-Length (not chunked)\n",
        )));
    }
    let length = header("content-length").map(|value| value.parse::<usize>());
    let length = match length {
        None => 0,
        Some(Ok(length)) if length <= MAX_BODY => length,
        Some(Ok(_)) => {
            return Ok(Err(Response::text(
                "413 Content Too Large",
                "body too large\n",
            )));
        }
        Some(Err(_)) => {
            return Ok(Err(Response::text(
                "400 Bad Request",
                "bad Content-Length\n",
            )));
        }
    };
    let mut buf = [0; 1024];
    while body.len() < length {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    Ok(Ok((head, body)))
}

/// Reads up to the end of the request head; returns it and the bytes after it, or
/// `None` if it is longer than allowed.
async fn read_head(stream: &TcpStream) -> io::Result<Option<(String, Vec<u8>)>> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0; 1024];
    let mut end = HeadEnd::default();
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        match end.find(&head) {
            Some(end) if end <= MAX_REQUEST => {
                let rest = head.split_off(end);
                return Ok(Some((String::from_utf8_lossy(&head).into_owned(), rest)));
            }
            Some(_) => return Ok(None),
            None if head.len() > MAX_REQUEST => return Ok(None),
            None => {}
        }
    }
}

/// Where a request head ends (after its blank line, `\r\n\r\n` or a bare `\n\n`),
/// found by looking only at what came since the last look: a head sent a byte at a time
/// costs its length, not its length squared.
#[derive(Debug, Default)]
struct HeadEnd {
    /// Bytes of the head already looked at.
    seen: usize,
}

impl HeadEnd {
    /// The end of the head in `head` (which only ever grows), if it has come.
    fn find(&mut self, head: &[u8]) -> Option<usize> {
        let from = self.seen;
        self.seen = head.len();
        memchr::memchr_iter(b'\n', &head[from..])
            .map(|at| from + at)
            .find(|&at| {
                (at >= 1 && head[at - 1] == b'\n') || (at >= 3 && &head[at - 3..at] == b"\r\n\r")
            })
            .map(|at| at + 1)
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Sends `response` (without its body if `head_only`, its `Content-Length` still the
/// body's) and closes.
async fn respond(stream: &TcpStream, response: &Response, head_only: bool) -> io::Result<()> {
    let Response {
        status,
        content_type,
        headers,
        body,
    } = response;
    let mut text = String::with_capacity(body.len() + 128);
    let _ = write!(
        text,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        body.len()
    );
    if !head_only {
        text.push_str(body);
    }
    stream.write_all(text.as_bytes()).await?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// A metric: its name, its help, and where a [`Snapshot`] has it.
type Metric = (&'static str, &'static str, fn(&Snapshot) -> u64);

/// The figures of every thread, summed, and each thread's own under a `thread` label,
/// in the Prometheus text format.
fn metrics(sources: &Sources, threads: &[Snapshot]) -> String {
    let mut registry = Registry::default();
    let total = Snapshot::sum(threads);
    let mut gauges: Vec<Metric> = vec![
        ("echo_connections_open", "Connections being served", |s| {
            s.open
        }),
        ("coop_tasks", "Live tasks", |s| s.tasks),
        ("coop_tasks_ready", "Tasks in the ready queue", |s| s.ready),
        ("coop_sockets", "Registered sockets", |s| s.sockets),
        ("coop_timers", "Pending timers", |s| s.timers),
    ];
    if sources.http {
        gauges.push(("echo_websockets_open", "WebSocket connections open", |s| {
            s.http.ws_open
        }));
    }
    let mut counters: Vec<Metric> = vec![
        ("echo_connections", "Connections accepted", |s| s.total),
        ("echo_bytes_in", "Bytes read from clients", |s| s.bytes_in),
        ("echo_bytes_out", "Bytes written to clients", |s| {
            s.bytes_out
        }),
        ("echo_messages_in", "Reads that returned data", |s| {
            s.messages
        }),
    ];
    if sources.udp {
        counters.extend([
            (
                "echo_udp_received",
                "UDP datagrams received",
                (|s| s.udp_in) as fn(&Snapshot) -> u64,
            ),
            ("echo_udp_answered", "UDP datagrams answered", |s| s.udp_out),
            (
                "echo_udp_refused",
                "UDP datagrams left unanswered by the rate limit (--udp-rate)",
                |s| s.udp_refused,
            ),
        ]);
    }
    if sources.http {
        counters.extend([
            (
                "echo_http_bytes_in",
                "HTTP body and WebSocket message bytes received",
                (|s| s.http.bytes_in) as fn(&Snapshot) -> u64,
            ),
            (
                "echo_http_bytes_out",
                "HTTP body and WebSocket message bytes sent",
                |s| s.http.bytes_out,
            ),
            (
                "echo_websocket_connections",
                "WebSocket connections accepted",
                |s| s.http.ws_total,
            ),
            (
                "echo_websocket_messages",
                "WebSocket messages received (each echoed)",
                |s| s.http.ws_messages,
            ),
        ]);
        requests(&mut registry, &total, threads);
    }
    refusals(&mut registry, &total, threads);
    if let Some(table) = &sources.faults {
        faults_applied(&mut registry, table);
    }
    let label = |index: usize| vec![("thread".to_string(), index.to_string())];
    for (name, help, value) in gauges {
        let gauge = Gauge::<i64>::default();
        gauge.set(value(&total) as i64);
        registry.register(name, help, gauge);
        let each = Family::<Vec<(String, String)>, Gauge<i64>>::default();
        for (index, thread) in threads.iter().enumerate() {
            each.get_or_create(&label(index)).set(value(thread) as i64);
        }
        registry.register(
            format!("{name}_by_thread"),
            format!("{help}, on each serving thread"),
            each,
        );
    }
    let parked = Family::<Vec<(String, String)>, Gauge<i64>>::default();
    let parked_each = Family::<Vec<(String, String)>, Gauge<i64>>::default();
    for (area, value) in [
        ("read", (|s| s.parked_read) as fn(&Snapshot) -> u64),
        ("write", |s| s.parked_write),
    ] {
        let area_label = ("area".to_string(), area.to_string());
        parked
            .get_or_create(&vec![area_label.clone()])
            .set(value(&total) as i64);
        for (index, thread) in threads.iter().enumerate() {
            let mut labels = label(index);
            labels.push(area_label.clone());
            parked_each.get_or_create(&labels).set(value(thread) as i64);
        }
    }
    let parked_help = "Tasks waiting in a socket's read or write waiting area";
    registry.register("coop_tasks_parked", parked_help, parked);
    registry.register(
        "coop_tasks_parked_by_thread",
        format!("{parked_help}, on each serving thread"),
        parked_each,
    );
    for (name, help, value) in counters {
        let counter = Counter::<u64>::default();
        counter.inc_by(value(&total));
        registry.register(name, help, counter);
        let each = Family::<Vec<(String, String)>, Counter<u64>>::default();
        for (index, thread) in threads.iter().enumerate() {
            each.get_or_create(&label(index)).inc_by(value(thread));
        }
        registry.register(
            format!("{name}_by_thread"),
            format!("{help}, on each serving thread"),
            each,
        );
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

/// `echo_refused{reason}`, in all and by thread: clients turned away, every reason
/// (a zero included, so that a rate has its start).
/// `echo_faults{kind}`: how often each kind of fault has acted (every kind, a zero
/// included).
fn faults_applied(registry: &mut Registry, table: &fault::Table) {
    let family = Family::<Vec<(String, String)>, Counter<u64>>::default();
    for (kind, n) in fault::KINDS.iter().zip(table.applied()) {
        family
            .get_or_create(&vec![("kind".to_string(), kind.to_string())])
            .inc_by(n);
    }
    let help = "Faults applied (--fault, PUT /faults), by kind: replies delayed, \
                connections throttled, closed, reset or stalled, datagrams dropped, \
                delayed or duplicated, HTTP requests answered with a fault";
    registry.register("echo_faults", help, family);
}

fn refusals(registry: &mut Registry, total: &Snapshot, threads: &[Snapshot]) {
    let reason = |r: crate::refused::Reason| ("reason".to_string(), r.label().to_string());
    let all = Family::<Vec<(String, String)>, Counter<u64>>::default();
    for (r, count) in total.refused.by_reason() {
        all.get_or_create(&vec![reason(r)]).inc_by(count);
    }
    let by_thread = Family::<Vec<(String, String)>, Counter<u64>>::default();
    for (index, thread) in threads.iter().enumerate() {
        for (r, count) in thread.refused.by_reason() {
            let labels = vec![("thread".to_string(), index.to_string()), reason(r)];
            by_thread.get_or_create(&labels).inc_by(count);
        }
    }
    let help = "Clients turned away, by reason: a failed TLS handshake, a bad PROXY header, \
                over --max-connections-per-source";
    registry.register("echo_refused", help, all);
    registry.register(
        "echo_refused_by_thread",
        format!("{help}, on each serving thread"),
        by_thread,
    );
}

/// `echo_http_requests{method, status}`, in all and by thread: the pairs seen only.
fn requests(registry: &mut Registry, total: &Snapshot, threads: &[Snapshot]) {
    let all = Family::<Vec<(String, String)>, Counter<u64>>::default();
    for (labels, count) in request_counts(total) {
        all.get_or_create(&labels).inc_by(count);
    }
    let by_thread = Family::<Vec<(String, String)>, Counter<u64>>::default();
    for (index, thread) in threads.iter().enumerate() {
        for (mut labels, count) in request_counts(thread) {
            labels.insert(0, ("thread".to_string(), index.to_string()));
            by_thread.get_or_create(&labels).inc_by(count);
        }
    }
    let help = "HTTP requests answered, by method and status";
    registry.register("echo_http_requests", help, all);
    registry.register(
        "echo_http_requests_by_thread",
        format!("{help}, on each serving thread"),
        by_thread,
    );
}

/// The method and status labels of each count that is not zero.
fn request_counts(snapshot: &Snapshot) -> impl Iterator<Item = (Vec<(String, String)>, u64)> + '_ {
    snapshot
        .http
        .requests
        .iter()
        .enumerate()
        .flat_map(|(method, row)| {
            row.iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(move |(status, &count)| {
                    let status = http::STATUSES
                        .get(status)
                        .map_or("other".to_string(), u16::to_string);
                    let labels = vec![
                        ("method".to_string(), http::METHODS[method].to_string()),
                        ("status".to_string(), status),
                    ];
                    (labels, count)
                })
        })
}

#[cfg(test)]
mod tests {
    use super::HeadEnd;

    /// Fed a byte at a time, as a slow client sends, or all at once: the same end.
    #[test]
    fn a_head_ends_after_its_blank_line_however_it_arrives() {
        for (head, end) in [
            (&b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nrest"[..], 34),
            (b"GET / HTTP/1.0\n\n", 16),
            (b"GET / HTTP/1.1\r\nA: b\r\n\r\n", 24),
        ] {
            assert_eq!(HeadEnd::default().find(head), Some(end));
            let mut finder = HeadEnd::default();
            let found = (1..=head.len()).find_map(|n| finder.find(&head[..n]));
            assert_eq!(found, Some(end), "{:?}", String::from_utf8_lossy(head));
        }
        assert_eq!(HeadEnd::default().find(b"GET / HTTP/1.1\r\nA: b\r\n"), None);
    }

    /// Each look goes over the new bytes only (and three before them at most).
    #[test]
    fn each_look_covers_only_what_is_new() {
        let head = [
            b"GET / HTTP/1.1\r\n".as_slice(),
            &b"X: y\r\n".repeat(1000),
            b"\r\n",
        ]
        .concat();
        let mut finder = HeadEnd::default();
        for n in 1..head.len() {
            assert_eq!(finder.find(&head[..n]), None);
            assert_eq!(finder.seen, n);
        }
        assert_eq!(finder.find(&head), Some(head.len()));
    }
}
