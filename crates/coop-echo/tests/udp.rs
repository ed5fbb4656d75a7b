//! UDP echo: one reply datagram per datagram, exact, rate-limited per source.

mod common;

use std::io::ErrorKind;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::Server;

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
