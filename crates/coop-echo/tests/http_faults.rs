//! `--http`'s faults and shapes on demand, by query parameters on any path, and
//! `--http-defaults`, as curl sees them (HTTP/1.1 and HTTP/2).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::Server;

/// curl with `args`, bounded in time: its whole output, whatever its exit.
fn curl(args: &[&str]) -> Output {
    Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// The status curl saw and the body, for a request that must succeed.
fn get(url: &str, more: &[&str]) -> (String, Vec<u8>) {
    let mut args = vec!["-w", "\n%{http_code}"];
    args.extend_from_slice(more);
    args.push(url);
    let out = curl(&args);
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut body = out.stdout;
    let at = body.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&body[at + 1..]).into_owned();
    body.truncate(at);
    (status, body)
}

#[test]
fn query_parameters_make_each_fault_on_any_path() {
    if !common::need("curl", "apt-get install curl") {
        return;
    }
    let server = Server::start(&["--http", "0", "--admin", "0"]);
    let base = format!("http://{}", server.http_addr());
    for h2 in [false, true] {
        let version: &[&str] = if h2 {
            &["--http2-prior-knowledge"]
        } else {
            &[]
        };
        let (status, _) = get(&format!("{base}/anything?status=503"), version);
        assert_eq!(status, "503");
        let started = Instant::now();
        let (status, _) = get(&format!("{base}/echo?delay=200ms"), version);
        assert_eq!(status, "200");
        assert!(started.elapsed() >= Duration::from_millis(200));
        let (status, body) = get(&format!("{base}/x?size=1000"), version);
        assert_eq!((status.as_str(), body.len()), ("200", 1000));
        // The answer's own shape: a body, a content type, headers.
        let out = curl(&[
            "-i",
            &format!(
                "{base}/api?body=%7B%22ok%22%3Atrue%7D&content-type=application/json&header=X-Backend:b1&header=Retry-After:%205"
            ),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(text.contains("content-type: application/json"), "{text}");
        assert!(text.contains("x-backend: b1"), "{text}");
        assert!(text.contains("retry-after: 5"), "{text}");
        assert!(text.ends_with("{\"ok\":true}"), "{text}");
    }
    // A reset: of the connection over HTTP/1.1 (curl: 56, the connection reset), of the
    // stream over HTTP/2 (92, the stream not closed cleanly).
    let out = curl(&[&format!("{base}/echo?reset=true")]);
    assert_eq!(
        out.status.code(),
        Some(56),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = curl(&[
        "--http2-prior-knowledge",
        &format!("{base}/echo?reset=true"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(92),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A close: HTTP/1.1 says `Connection: close`.
    let out = curl(&["-i", &format!("{base}/echo?close=true")]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .to_lowercase()
            .contains("connection: close")
    );
    // A bad parameter is named.
    let (status, body) = get(&format!("{base}/x?status=abc"), &[]);
    assert_eq!(status, "400");
    assert!(String::from_utf8_lossy(&body).starts_with("status=abc:"));
    // Counted by kind.
    let (_, metrics) = common::http(
        server.admin_addr(),
        b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(
        common::metric::<u64>(&metrics, r#"echo_faults_total{kind="status"}"#),
        2
    );
    assert_eq!(
        common::metric::<u64>(&metrics, r#"echo_faults_total{kind="reset"}"#),
        2
    );
    assert_eq!(
        common::metric::<u64>(&metrics, r#"echo_faults_total{kind="delay"}"#),
        2
    );
}

#[test]
fn a_status_share_and_the_defaults() {
    if !common::need("curl", "apt-get install curl") {
        return;
    }
    let server = Server::start(&[
        "--http",
        "0",
        "--http-defaults",
        "status=503:25&header=X-Default:yes",
    ]);
    let base = format!("http://{}", server.http_addr());
    // 400 requests on one connection (curl reuses it for each URL given).
    let urls: Vec<String> = (0..400).map(|_| format!("{base}/d")).collect();
    let mut args = vec!["-w", "%{http_code}\n"];
    for url in &urls {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = curl(&args);
    let codes = String::from_utf8_lossy(&out.stdout);
    let failed = codes.lines().filter(|c| *c == "503").count();
    assert_eq!(codes.lines().count(), 400);
    // The binomial's 99.9% bounds for 400 draws at 25%: 100 ± 3.29 × 8.66.
    assert!((71..=129).contains(&failed), "{failed} of 400 answered 503");
    // A request naming a parameter of its own gets none of the defaults.
    let out = curl(&["-i", &format!("{base}/d?delay=1ms")]);
    let text = String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(!text.contains("x-default"), "{text}");
}

#[test]
fn bad_defaults_are_refused_at_start_in_one_line() {
    let out = common::run(
        &[
            "serve",
            "--port",
            "0",
            "--http",
            "0",
            "--http-defaults",
            "delay=soon",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("delay=soon: give e.g. 250ms"), "{stderr}");
}

/// Runs `f` on a coop runtime, bounded in time.
fn on_coop<T>(f: impl std::future::Future<Output = T>) -> T {
    coop::block_on(async {
        coop::time::timeout(common::IO_TIMEOUT, f)
            .await
            .expect("the WebSocket exchange took too long")
    })
}

async fn ws_connect(
    addr: std::net::SocketAddr,
) -> async_tungstenite::WebSocketStream<coop::TcpStream> {
    let stream = coop::TcpStream::connect(addr).await.unwrap();
    let (ws, _) = async_tungstenite::client_async(format!("ws://{addr}/ws"), stream)
        .await
        .expect("the WebSocket handshake");
    ws
}

#[test]
fn websocket_faults_act_on_message_payload() {
    use async_tungstenite::tungstenite::{Error, Message};
    use futures_util::StreamExt as _;

    let server = Server::start(&[
        "--http",
        "0",
        "--fault",
        "delay=100ms",
        "--fault",
        "close-after=10",
    ]);
    let addr = server.http_addr();
    on_coop(async {
        let mut ws = ws_connect(addr).await;
        let started = Instant::now();
        ws.send(Message::text("four")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("four"));
        assert!(started.elapsed() >= Duration::from_millis(100));
        // 4 payload bytes went; of this message's 20, the next 6, then the end: no close
        // frame, so the client sees the connection go.
        ws.send(Message::binary(vec![7; 20])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![7; 6])
        );
        match ws.next().await {
            None | Some(Err(Error::Protocol(_) | Error::ConnectionClosed | Error::Io(_))) => {}
            other => panic!("after the cut: {other:?}"),
        }
    });
    server.wait_for_log("the fault close-after=10 closed it");
}
