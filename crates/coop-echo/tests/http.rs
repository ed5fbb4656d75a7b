//! `serve --http`: the HTTP/1.1, HTTP/2 and WebSocket echo, with real clients (curl for
//! HTTP, tungstenite for WebSocket, raw bytes where a client must misbehave), its stop,
//! and what hostile clients get.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_tungstenite::tungstenite::Message;
use async_tungstenite::tungstenite::protocol::CloseFrame;
use async_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use common::certs::Certs;
use common::{IO_TIMEOUT, Server, pseudo_random};
use futures_util::StreamExt;

fn start_http(more: &[&str]) -> (Server, SocketAddr) {
    let mut args = vec!["--http", "0"];
    args.extend_from_slice(more);
    let server = Server::start(&args);
    let addr = server.http_addr();
    (server, addr)
}

/// `curl ARGS`, bounded in time; its stdout, asserting success.
fn curl(args: &[&str]) -> Vec<u8> {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    assert!(
        output.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A temporary file of the test's own, removed on drop.
struct TempFile(std::path::PathBuf);

impl TempFile {
    fn with(name: &str, bytes: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("coop-echo-http-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// POSTs `file` to `url` with curl (`how`: its protocol flags), and returns the body and
/// the HTTP version curl used.
fn post_echo(url: &str, file: &TempFile, how: &[&str]) -> (Vec<u8>, String) {
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = TempFile::with(&format!("out-{made}"), b"");
    let data = format!("@{}", file.0.display());
    let mut args = vec![
        "--data-binary",
        &data,
        "-H",
        "Content-Type: application/octet-stream",
    ];
    let out_path = out.0.display().to_string();
    args.extend_from_slice(&["-o", &out_path, "-w", "%{http_version}", url]);
    args.extend_from_slice(how);
    let version = String::from_utf8(curl(&args)).unwrap();
    (std::fs::read(&out.0).unwrap(), version)
}

#[test]
fn eight_mib_come_back_byte_for_byte_over_http1_h2c_and_https_h2() {
    let payload = pseudo_random(8 << 20, 24);
    let file = TempFile::with("8mib", &payload);
    let (_server, addr) = start_http(&[]);
    let url = format!("http://{addr}/echo");
    let (body, version) = post_echo(&url, &file, &["--http1.1"]);
    assert_eq!(version, "1.1");
    assert!(
        body == payload,
        "HTTP/1.1: {} bytes back, not the same",
        body.len()
    );
    let (body, version) = post_echo(&url, &file, &["--http2-prior-knowledge"]);
    assert_eq!(version, "2");
    assert!(
        body == payload,
        "h2c: {} bytes back, not the same",
        body.len()
    );

    let certs = Certs::new();
    let (cert, key) = (certs.path("cert.pem"), certs.path("key.pem"));
    let (_tls_server, tls_addr) = start_http(&["--tls-cert", &cert, "--tls-key", &key]);
    let url = format!("https://localhost:{}/echo", tls_addr.port());
    let ca = certs.path("ca.pem");
    let resolve = format!("localhost:{}:127.0.0.1", tls_addr.port());
    let (body, version) = post_echo(
        &url,
        &file,
        &["--http2", "--cacert", &ca, "--resolve", &resolve],
    );
    assert_eq!(version, "2", "ALPN chose h2");
    assert!(
        body == payload,
        "HTTPS h2: {} bytes back, not the same",
        body.len()
    );
}

#[test]
fn a_chunked_request_gets_a_chunked_echo_with_its_content_type() {
    let (_server, addr) = start_http(&[]);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: text/x-test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/x-test"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let body: String = body
        .split("\r\n")
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, piece)| piece)
        .collect();
    assert_eq!(body, "hello world");
}

#[test]
fn a_description_names_the_query_the_headers_and_the_instance() {
    let (_server, addr) = start_http(&["--instance", "edge-7"]);
    let body = curl(&[
        "-H",
        "X-Probe: 42",
        &format!("http://{addr}/some/path?a=1&a=2&b=x%20y"),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["method"], "GET");
    assert_eq!(json["path"], "/some/path");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["query"]["raw"], "a=1&a=2&b=x%20y");
    assert_eq!(json["query"]["parsed"]["a"], serde_json::json!(["1", "2"]));
    assert_eq!(json["query"]["parsed"]["b"], serde_json::json!(["x y"]));
    let headers = json["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["x-probe", "42"])),
        "{headers:?}"
    );
    assert_eq!(json["server"]["instance"], "edge-7");
    assert_eq!(json["server"]["thread"], 0);
    let client: SocketAddr = json["client"].as_str().unwrap().parse().unwrap();
    assert!(client.ip().is_loopback());
    assert_eq!(json["tls"], serde_json::Value::Null);
    assert_eq!(json["body"]["length"], 0);

    // A body that is not UTF-8 comes as base64, with its length.
    let file = TempFile::with("binary", &[0xff, 0xfe, 0x00, 0x41]);
    let body = curl(&[
        "--data-binary",
        &format!("@{}", file.0.display()),
        &format!("http://{addr}/x"),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["body"]["length"], 4);
    assert_eq!(json["body"]["base64"], "//4AQQ==");
}

#[test]
fn behind_a_proxy_header_the_description_names_the_client_it_gave() {
    let (_server, addr) = start_http(&["--proxy-protocol"]);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = stream.local_addr().unwrap();
    stream
        .write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 80\r\nGET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["client"], "192.0.2.7:5555");
    assert_eq!(json["via"], me.to_string());
}

#[test]
fn https_descriptions_carry_the_tls_details() {
    let certs = Certs::new();
    let (cert, key) = (certs.path("cert.pem"), certs.path("key.pem"));
    let (_server, addr) = start_http(&["--tls-cert", &cert, "--tls-key", &key]);
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let body = curl(&[
        "--http1.1",
        "--cacert",
        &certs.path("ca.pem"),
        "--resolve",
        &resolve,
        &format!("https://localhost:{}/tls", addr.port()),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["tls"]["sni"], "localhost");
    assert_eq!(json["tls"]["alpn"], "http/1.1");
    assert!(
        json["tls"]["version"]
            .as_str()
            .unwrap()
            .starts_with("TLS 1.")
    );
    assert!(!json["tls"]["cipher"].as_str().unwrap().is_empty());
}

#[test]
fn server_sent_events_arrive_as_they_are_made() {
    let (_server, addr) = start_http(&[]);
    let mut child = Command::new("curl")
        .args(["-sN", "--max-time", "20"])
        .arg(format!("http://{addr}/sse?count=3&interval=200ms"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let stdout = child.stdout.take().unwrap();
    let mut arrivals = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.starts_with("data:") {
            arrivals.push((Instant::now(), line));
        }
    }
    assert!(child.wait().unwrap().success());
    assert_eq!(arrivals.len(), 3, "{arrivals:?}");
    assert_eq!(arrivals[2].1, r#"data: {"n":3,"of":3}"#);
    // Made 200 ms apart, they cannot arrive closer unless the server held them back and
    // sent them together (the bound is a floor the server's timer sets, not a speed).
    let spread = arrivals[2].0 - arrivals[0].0;
    assert!(
        spread >= Duration::from_millis(300),
        "all came at once: {spread:?}"
    );
}

#[test]
fn a_stream_sends_the_size_asked_and_bad_parameters_are_named() {
    let (_server, addr) = start_http(&[]);
    let body = curl(&[&format!("http://{addr}/stream?size=1MiB")]);
    assert_eq!(body.len(), 1 << 20);
    assert!(body.starts_with(b"abcdefghij"));
    let output = Command::new("curl")
        .args(["-s", "-w", "%{http_code}", "--max-time", "20"])
        .arg(format!("http://{addr}/sse?count=0"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("count=0: give 1 to"), "{text}");
    assert!(text.ends_with("400"), "{text}");
}

#[test]
fn a_browser_gets_the_page_and_others_the_description() {
    let (_server, addr) = start_http(&[]);
    let page = curl(&["-H", "Accept: text/html", &format!("http://{addr}/")]);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("new WebSocket("), "{page}");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "an external asset"
    );
    let json = curl(&[&format!("http://{addr}/")]);
    assert!(serde_json::from_slice::<serde_json::Value>(&json).is_ok());
}

/// Runs `f` on a coop runtime, bounded by `IO_TIMEOUT`.
fn on_coop<T>(f: impl std::future::Future<Output = T>) -> T {
    coop::block_on(async {
        coop::time::timeout(IO_TIMEOUT, f)
            .await
            .expect("the WebSocket exchange took too long")
    })
}

type Ws = async_tungstenite::WebSocketStream<coop::TcpStream>;

async fn ws_connect(addr: SocketAddr) -> Ws {
    let stream = coop::TcpStream::connect(addr).await.unwrap();
    let (ws, response) = async_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .expect("the WebSocket handshake");
    assert_eq!(response.status(), 101);
    ws
}

#[test]
fn a_websocket_echoes_text_and_binary_answers_pings_and_closes_cleanly() {
    let (server, addr) = start_http(&["--admin", "0"]);
    on_coop(async {
        let mut ws = ws_connect(addr).await;
        ws.send(Message::text("héllo")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("héllo"));
        let binary = vec![0, 1, 2, 255, 254];
        ws.send(Message::binary(binary.clone())).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::binary(binary));
        ws.send(Message::Ping(b"are you there".to_vec().into()))
            .await
            .unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::Pong(b"are you there".to_vec().into())
        );
        ws.close(None).await.unwrap();
        // The server answers the close, and the stream ends.
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(_)) => {}
                Ok(other) => panic!("after the close: {other:?}"),
                Err(e) => panic!("an unclean close: {e}"),
            }
        }
    });
    let (_, metrics) = common::http(
        server.admin_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(
        common::metric::<u64>(&metrics, "echo_websocket_messages_total"),
        2
    );
    assert_eq!(
        common::metric::<u64>(&metrics, "echo_websocket_connections_total"),
        1
    );
    assert!(
        metrics.contains(r#"echo_http_requests_total{method="GET",status="101"} 1"#),
        "{metrics}"
    );
}

#[test]
fn a_websocket_message_over_the_limit_is_closed_with_1009() {
    let (_server, addr) = start_http(&["--ws-max-message", "1KiB"]);
    on_coop(async {
        let mut ws = ws_connect(addr).await;
        ws.send(Message::binary(vec![7; 1024])).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap().len(), 1024);
        ws.send(Message::binary(vec![7; 1025])).await.unwrap();
        match ws.next().await {
            Some(Ok(Message::Close(Some(CloseFrame { code, .. })))) => {
                assert_eq!(code, CloseCode::Size);
            }
            other => panic!("not a close 1009: {other:?}"),
        }
    });
}

/// Reads one unmasked frame from the server: its first byte and payload.
fn read_frame(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0; 2];
    stream.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0; 2];
            stream.read_exact(&mut n).unwrap();
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0; 8];
            stream.read_exact(&mut n).unwrap();
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0; len];
    stream.read_exact(&mut payload).unwrap();
    (head[0], payload)
}

fn close_code(frame: &(u8, Vec<u8>)) -> u16 {
    assert_eq!(frame.0, 0x88, "not a close frame: {frame:?}");
    u16::from_be_bytes([frame.1[0], frame.1[1]])
}

#[test]
fn a_frame_with_a_bogus_length_is_closed_at_once() {
    let (_server, addr) = start_http(&[]);
    let mut ws = common::raw_websocket(addr);
    // A binary frame of 2^63 - 1 bytes, masked, and no payload behind it.
    let mut frame = vec![0x82, 0xff];
    frame.extend_from_slice(&(i64::MAX as u64).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    ws.write_all(&frame).unwrap();
    let code = close_code(&read_frame(&mut ws));
    assert!(code == 1009 || code == 1002, "close code {code}");
}

/// The status line of the answer to `request`, sent on a new connection.
fn status_of(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = stream.write_all(request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response.lines().next().unwrap_or_default().to_string()
}

#[test]
fn a_request_head_past_the_limit_is_answered_431() {
    let (_server, addr) = start_http(&[]);
    let big = "a".repeat(20 * 1024);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let status = status_of(addr, request.as_bytes());
    assert!(status.starts_with("HTTP/1.1 431"), "{status}");
    // And the server goes on.
    assert!(
        status_of(
            addr,
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .starts_with("HTTP/1.1 200")
    );
}

/// Sends `first`, then a byte of `drip` every 100 ms until the server answers or
/// closes; returns what it answered.
fn dribble(addr: SocketAddr, first: &[u8], drip: u8) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(first).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dripping = std::thread::spawn({
        let done = std::sync::Arc::clone(&done);
        move || {
            let deadline = Instant::now() + IO_TIMEOUT;
            while !done.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                if writer.write_all(&[drip]).is_err() {
                    return;
                }
                // Pacing the drip, not waiting for the server: the server's own timer ends it.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    dripping.join().unwrap();
    response
}

#[test]
fn a_body_that_never_ends_is_answered_408() {
    let (_server, addr) = start_http(&["--idle-timeout", "1"]);
    let started = Instant::now();
    let response = dribble(
        addr,
        b"POST /describe HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        b'x',
    );
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    assert!(started.elapsed() < IO_TIMEOUT);
}

#[test]
fn an_upgrade_that_never_finishes_is_let_go() {
    let (server, addr) = start_http(&["--idle-timeout", "1"]);
    // Headers that never end: one more byte of a header value each 100 ms.
    let response = dribble(
        addr,
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Slow: ",
        b'z',
    );
    // hyper closes without a word, or with a 408.
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.is_empty() || response.starts_with("HTTP/1.1 408"),
        "{response}"
    );
    server.wait_for_log("no whole request head in time");
}

#[test]
fn a_graceful_stop_closes_keep_alive_h2_and_websocket_connections_each_its_way() {
    let (mut server, addr) = start_http(&["--shutdown-timeout", "2"]);
    // HTTP/1.1: a request whose body is half sent.
    let mut h1 = TcpStream::connect(addr).unwrap();
    h1.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    h1.write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
        .unwrap();
    // HTTP/2: the preface and an empty SETTINGS frame.
    let mut h2 = TcpStream::connect(addr).unwrap();
    h2.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let mut ws = common::raw_websocket(addr);
    server.wait_until("three connections", |log| {
        log.matches("Connection from").count() == 3
    });

    server.signal("TERM");
    server.wait_for_log("stopped accepting");
    // HTTP/1.1: the answer to the request in flight says the connection closes, and it does.
    h1.write_all(b"cd").unwrap();
    let mut response = String::new();
    h1.read_to_string(&mut response).unwrap();
    let lower = response.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 200"), "{response}");
    assert!(lower.contains("connection: close"), "{response}");
    // HTTP/2: a GOAWAY frame (type 7) comes.
    let mut goaway = false;
    while !goaway {
        let mut head = [0; 9];
        if h2.read_exact(&mut head).is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        h2.read_exact(&mut payload).unwrap();
        goaway = head[3] == 7;
    }
    assert!(goaway, "no GOAWAY");
    // WebSocket: at the deadline, a close frame 1001; answered, the server lets go.
    assert_eq!(close_code(&read_frame(&mut ws)), 1001);
    ws.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe9]).unwrap();
    assert!(server.wait_exit(IO_TIMEOUT).success());
}

#[test]
fn ten_thousand_idle_keep_alive_connections_cost_little_and_slow_nobody() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    const CONNECTIONS: usize = 10_000;
    let mut limit = getrlimit(Resource::Nofile);
    limit.current = limit.maximum;
    let _ = setrlimit(Resource::Nofile, limit);
    if getrlimit(Resource::Nofile)
        .current
        .is_some_and(|n| n < CONNECTIONS as u64 + 100)
    {
        common::skip_without(
            "10,100 file descriptors",
            "raise the hard limit: ulimit -Hn",
        );
        return;
    }
    let (server, addr) = start_http(&["--quiet"]);
    let probe = || {
        let started = Instant::now();
        let status = status_of(
            addr,
            b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        started.elapsed()
    };
    probe();
    let before = server.rss_kib();
    let mut idle = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
            .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        idle.push(stream);
    }
    // Each answered, and kept open.
    for stream in &mut idle {
        let mut response = [0; 512];
        let n = stream.read(&mut response).unwrap();
        assert!(response[..n].starts_with(b"HTTP/1.1 200"));
    }
    let per_connection = (server.rss_kib().saturating_sub(before)) as f64 / CONNECTIONS as f64;
    eprintln!("{per_connection:.1} KiB per idle keep-alive connection");
    // hyper keeps a read and a write buffer of 8 KiB each per connection (16 KiB in all
    // here); the rest is the connection's task. Bounded, whatever the count.
    assert!(
        per_connection < 64.0,
        "{per_connection:.1} KiB per idle connection"
    );
    // A new client is answered among them.
    let took = probe();
    assert!(took < IO_TIMEOUT, "{took:?}");
}

#[test]
fn an_echo_of_any_size_streams_in_bounded_memory() {
    let (server, addr) = start_http(&["--quiet"]);
    const TOTAL: usize = 256 << 20;
    let before = server.rss_kib();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let piece = vec![b'e'; 1 << 20];
        for _ in 0..TOTAL / piece.len() {
            writer.write_all(&piece).unwrap();
        }
    });
    // The head, then the body as it comes back, while the rest is still being sent.
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    while line != "\r\n" {
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    let mut back = 0;
    let mut peak = 0;
    let mut buf = vec![0; 1 << 16];
    while back < TOTAL {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {back} bytes");
        assert!(buf[..n].iter().all(|&b| b == b'e'));
        back += n;
        if back % (32 << 20) < n {
            peak = peak.max(server.rss_kib().saturating_sub(before));
        }
    }
    sending.join().unwrap();
    eprintln!("256 MiB through, the server's memory grew {peak} KiB at most");
    assert!(peak < 16 * 1024, "{peak} KiB more while streaming");

    // A client that sends and never reads: the server stops reading too.
    let mut stalled = TcpStream::connect(addr).unwrap();
    stalled
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stalled
        .write_all(
            format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {TOTAL}\r\n\r\n").as_bytes(),
        )
        .unwrap();
    let piece = vec![b's'; 1 << 20];
    let mut sent = 0;
    // Writes block once the kernel's buffers both ways are full: then nothing is read.
    while sent < TOTAL && stalled.write_all(&piece).is_ok() {
        sent += piece.len();
    }
    assert!(
        sent < TOTAL,
        "the server took all {sent} bytes of a client that reads nothing"
    );
    let grown = server.rss_kib().saturating_sub(before);
    assert!(grown < 16 * 1024, "{grown} KiB more for a stalled client");
}

#[test]
fn with_threads_each_serving_thread_has_its_own_http_listener() {
    let (_server, addr) = start_http(&["--threads", "2"]);
    let mut threads = std::collections::BTreeSet::new();
    // The kernel spreads connections over the two listeners by their addresses: 40
    // connections all on one thread would be a chance of 2^-39.
    for _ in 0..40 {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
            .write_all(b"GET /which HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1;
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        threads.insert(json["server"]["thread"].as_u64().unwrap());
    }
    assert_eq!(threads.into_iter().collect::<Vec<_>>(), [0, 1]);
}
