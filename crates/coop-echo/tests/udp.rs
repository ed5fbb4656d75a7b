//! UDP echo: one reply datagram per datagram, exact, rate-limited per source.

mod common;

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{Server, metric};

fn client(server: &Server) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    socket
}

/// Replies until none comes for `quiet`.
fn replies(socket: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    socket.set_read_timeout(Some(quiet)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0; 70_000];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return got;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn a_datagram_gets_its_reply_on_the_same_port() {
    let server = Server::start(&["--udp"]);
    server.wait_for_log("(udp)");
    let socket = client(&server);
    socket.send(b"ping").unwrap();
    let mut buf = [0; 64];
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"GOT:ping");

    // The largest datagram comes back cut to the largest payload, in one piece.
    let big = vec![b'x'; 65_507];
    socket.send(&big).unwrap();
    let mut reply = vec![0; 70_000];
    let n = socket.recv(&mut reply).unwrap();
    assert_eq!(n, 65_507);
    assert_eq!(&reply[..4], b"GOT:");
    assert!(reply[4..n].iter().all(|&b| b == b'x'));
}

/// 1,000 datagrams at once from one socket: the default limit answers a second's worth
/// (100), each reply exact; the rest go unanswered.
#[test]
fn a_flooding_source_is_limited_and_what_comes_back_is_exact() {
    let server = Server::start(&["--udp"]);
    server.wait_for_log("(udp)");
    let socket = client(&server);
    let start = Instant::now();
    for i in 0..1000 {
        socket.send(format!("datagram {i:04}").as_bytes()).unwrap();
    }
    let got = replies(&socket, Duration::from_millis(500));
    let elapsed = start.elapsed().as_secs_f64();
    for reply in &got {
        let text = std::str::from_utf8(reply).unwrap();
        let number: u32 = text
            .strip_prefix("GOT:datagram ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not an exact reply: {text:?}"));
        assert!(number < 1000);
    }
    let allowed = 100.0 + 100.0 * elapsed;
    assert!(!got.is_empty());
    assert!(
        (got.len() as f64) <= allowed,
        "{} replies in {elapsed:.2} s",
        got.len()
    );
    server.wait_for_log("over the rate limit");
}

/// Without the limit, every one of 1,000 datagrams is answered exactly (sent in rounds of
/// 50, so that no socket buffer overflows).
#[test]
fn without_a_limit_every_datagram_is_answered() {
    let server = Server::start(&["--udp", "--udp-rate", "0"]);
    server.wait_for_log("(udp)");
    let socket = client(&server);
    let mut answered = std::collections::BTreeSet::new();
    let mut buf = [0; 64];
    for round in 0..20 {
        for i in 0..50 {
            socket
                .send(format!("d{:04}", round * 50 + i).as_bytes())
                .unwrap();
        }
        for _ in 0..50 {
            let n = socket.recv(&mut buf).unwrap();
            let text = std::str::from_utf8(&buf[..n]).unwrap();
            let number: u32 = text.strip_prefix("GOT:d").unwrap().parse().unwrap();
            assert!(answered.insert(number), "one reply per datagram");
        }
    }
    assert_eq!(answered.len(), 1000);
}

/// One scrape of `/metrics`: its body.
fn scrape(admin: std::net::SocketAddr) -> String {
    let (status, body) = common::http(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(status.starts_with("HTTP/1.1 200 "), "{status}");
    body
}

/// `/metrics` counts UDP exactly: with `--udp-rate 1`, 20 datagrams sent at once get one
/// reply per token (the first, and one per second that sending took), the rest are
/// refused; received, answered and refused match what the client saw, datagram for
/// datagram.
#[test]
fn metrics_count_datagrams_received_answered_and_refused() {
    const SENT: u64 = 20;
    let server = Server::start(&["--quiet", "--udp", "--udp-rate", "1", "--admin", "0"]);
    let admin = server.admin_addr();
    let socket = client(&server);
    for i in 0..SENT {
        socket.send(format!("d{i:02}").as_bytes()).unwrap();
    }
    // Every datagram has been dealt with once the server counts each as answered or
    // refused; a reply is in this socket's queue by then (loopback delivers as it sends).
    let deadline = Instant::now() + common::IO_TIMEOUT;
    let body = loop {
        let body = scrape(admin);
        let dealt_with = metric::<u64>(&body, "echo_udp_answered_total")
            + metric::<u64>(&body, "echo_udp_refused_total");
        if metric::<u64>(&body, "echo_udp_received_total") == SENT && dealt_with == SENT {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "not all datagrams counted:\n{body}"
        );
        // Not a wait for the server: the next scrape is the wait.
        std::thread::yield_now();
    };
    let answered: u64 = metric(&body, "echo_udp_answered_total");
    let refused: u64 = metric(&body, "echo_udp_refused_total");

    let mut buf = [0; 64];
    for _ in 0..answered {
        let n = socket.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"GOT:d"), "{:?}", &buf[..n]);
    }
    socket.set_nonblocking(true).unwrap();
    assert_eq!(
        socket.recv(&mut buf).map_err(|e| e.kind()),
        Err(ErrorKind::WouldBlock),
        "more replies than /metrics counted as answered"
    );
    assert!(answered >= 1, "the first datagram has its token");
    assert!(
        refused >= 1,
        "a rate of 1/s cannot answer 20 datagrams sent at once"
    );
    assert_eq!(answered + refused, SENT);
    server.wait_for_log("over the rate limit, 1 datagram unanswered so far");
}
