//! `serve --fault SPEC` on the TCP port, plain and TLS, from the client's side: each
//! fault does what it says, to the connections drawn for it, and a bad SPEC is refused
//! at start in one line.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::certs::Certs;
use common::{IO_TIMEOUT, Server, run};
use rustls::pki_types::ServerName;

/// What a read of `stream` came to: bytes, the end, or a reset.
#[derive(Debug, PartialEq)]
enum Got {
    Bytes(Vec<u8>),
    End,
    Reset,
}

fn read_some(stream: &mut impl Read) -> Got {
    let mut buf = [0; 4096];
    match stream.read(&mut buf) {
        Ok(0) => Got::End,
        Ok(n) => Got::Bytes(buf[..n].to_vec()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Got::Reset,
        Err(e) => panic!("read: {e}"),
    }
}

/// Everything until the end or a reset, and which it was.
fn read_all(stream: &mut impl Read) -> (Vec<u8>, Got) {
    let mut got = Vec::new();
    loop {
        match read_some(stream) {
            Got::Bytes(bytes) => got.extend(bytes),
            end => return (got, end),
        }
    }
}

#[test]
fn delay_holds_each_reply() {
    let server = Server::start(&["--fault", "delay=100ms"]);
    let mut client = server.connect();
    for i in 0..5 {
        let started = Instant::now();
        let reply = common::round_trip(&mut client, format!("ping{i}").as_bytes(), 9);
        let took = started.elapsed();
        assert_eq!(reply, format!("GOT:ping{i}").as_bytes());
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_millis(300),
            "round trip {i}: {took:?}"
        );
    }
}

/// The server's own hold is not the client's silence: a reply held longer than the idle
/// timeout does not close the connection as idle.
#[test]
fn a_delay_past_the_idle_timeout_is_not_idleness() {
    let server = Server::start(&["--idle-timeout", "1", "--fault", "delay=1500ms"]);
    let mut client = server.connect();
    for message in ["one", "two"] {
        let reply = common::round_trip(&mut client, message.as_bytes(), 7);
        assert_eq!(reply, format!("GOT:{message}").as_bytes());
    }
}

#[test]
fn close_after_sends_exactly_that_many_reply_bytes_then_the_end() {
    let server = Server::start(&["--fault", "close-after=10"]);
    let mut client = server.connect();
    // Two messages: the cut falls in the second reply.
    client.write_all(b"hey").unwrap();
    assert_eq!(read_some(&mut client), Got::Bytes(b"GOT:hey".to_vec()));
    client.write_all(b"hello there").unwrap();
    let (rest, end) = read_all(&mut client);
    assert_eq!(rest, b"GOT");
    assert_eq!(end, Got::End);
    // The server keeps its side (not reading) until the client leaves: no RST after
    // the FIN for bytes the client still sends.
    client.write_all(b"anyone?").unwrap();
    assert_eq!(read_some(&mut client), Got::End);
    drop(client);
    server.wait_for_log("the fault close-after=10 closed it");
}

#[test]
fn reset_after_resets_after_at_most_that_many_reply_bytes() {
    let server = Server::start(&["--fault", "reset-after=10"]);
    let mut client = server.connect();
    client.write_all(b"hello there").unwrap();
    let (got, end) = read_all(&mut client);
    assert!(got.len() <= 10, "{got:?}");
    assert!(b"GOT:hello there".starts_with(&got), "{got:?}");
    assert_eq!(end, Got::Reset);
}

#[test]
fn stall_after_answers_nothing_and_keeps_the_connection_open() {
    let server = Server::start(&["--fault", "stall-after=0@50%", "--fault-seed", "1"]);
    // The seed's first two draws: which connection stalls is the same every run, and
    // one of the first few does not (each is drawn at 50%).
    let (mut stalled, mut answered) = (None, None);
    for _ in 0..16 {
        let mut client = server.connect();
        client
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        client.write_all(b"anyone?").unwrap();
        let mut buf = [0; 64];
        match client.read(&mut buf) {
            Ok(11) if answered.is_none() => answered = Some(client),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stalled.is_none() {
                    stalled = Some(client);
                }
            }
            Ok(11) => {}
            other => panic!("{other:?}"),
        }
        if stalled.is_some() && answered.is_some() {
            break;
        }
    }
    let (mut stalled, mut answered) = (stalled.unwrap(), answered.unwrap());
    // Another client is answered while the stalled one waits, and the stalled one is
    // still open: a read still waits, rather than finding the end or a reset.
    assert_eq!(common::round_trip(&mut answered, b"more", 8), b"GOT:more");
    stalled
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0; 64];
    let still = stalled.read(&mut buf).unwrap_err();
    assert!(
        matches!(still.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        "{still}"
    );
    // Gone once its client leaves (looked at each second).
    drop(stalled);
    server.wait_for_log("the fault stall-after=0 stalled it until the client left");
}

#[test]
fn throttle_paces_the_replies() {
    let server = Server::start(&["--prefix", "", "--fault", "throttle=10KiB/s"]);
    let payload = common::pseudo_random(50 * 1024, 5);
    let started = Instant::now();
    let reply = common::stream_through(&server, Arc::new(payload.clone()));
    let took = started.elapsed();
    assert_eq!(reply, payload);
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(7),
        "50 KiB at 10 KiB/s took {took:?}"
    );
}

/// Which of `count` connections, one after another, were reset at accept.
fn resets_at_accept(server: &Server, count: usize) -> Vec<bool> {
    (0..count)
        .map(|_| {
            // The reset may come before the connect returns, or the write (which then
            // takes the error the read would have said).
            let mut client = match TcpStream::connect(server.addr) {
                Ok(client) => client,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("{e}"),
            };
            client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            if let Err(e) = client.write_all(b"x") {
                assert!(
                    matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe),
                    "{e}"
                );
                return true;
            }
            match read_some(&mut client) {
                Got::Bytes(bytes) => {
                    assert_eq!(bytes, b"GOT:x");
                    false
                }
                Got::Reset => true,
                Got::End => panic!("an end, not a reset"),
            }
        })
        .collect()
}

#[test]
fn a_share_is_drawn_per_connection_and_a_seed_repeats_it() {
    let args = [
        "--quiet",
        "--fault",
        "reset-after=0@30%",
        "--fault-seed",
        "42",
    ];
    let first = resets_at_accept(&Server::start(&args), 400);
    let reset = first.iter().filter(|&&r| r).count();
    // The binomial's 99.9% bounds for 400 draws at 30%: 120 ± 3.29 × 9.17.
    assert!((90..=150).contains(&reset), "{reset} of 400 reset");
    let again = resets_at_accept(&Server::start(&args), 400);
    assert_eq!(first, again, "the same seed, the same connections");
}

#[test]
fn faults_act_on_tls_plaintext() {
    let certs = Certs::new();
    let server = certs.serve(&["--fault", "close-after=10"]);
    let config = coop_echo::tls::client_config(Some(Path::new(&certs.path("ca.pem")))).unwrap();
    let socket = TcpStream::connect(server.addr).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let session =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(session, socket);
    tls.write_all(b"hello there").unwrap();
    let mut got = Vec::new();
    // The server's close_notify ends the stream cleanly.
    tls.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"GOT:hello ");
}

#[test]
fn a_bad_spec_is_refused_at_start_in_one_line() {
    let out = run(&["serve", "--port", "0", "--fault", "delay=soon"], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("'delay=soon': soon is not a duration"),
        "{stderr}"
    );
}

/// Sends `count` datagrams (`0`, `1`, ...), one every 200 µs, to `server`'s UDP port,
/// then collects what comes back until half a second passes without a reply.
fn udp_replies(server: &Server, count: usize) -> Vec<String> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server.addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for i in 0..count {
        socket.send(i.to_string().as_bytes()).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut replies = Vec::new();
    let mut buf = [0; 64];
    while let Ok(n) = socket.recv(&mut buf) {
        replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    replies
}

#[test]
fn udp_drops_and_duplicates_their_share() {
    let server = Server::start(&[
        "--udp",
        "--udp-rate",
        "0",
        "--fault",
        "drop=50%",
        "--fault-seed",
        "9",
    ]);
    let answered = udp_replies(&server, 400).len();
    // The binomial's 99.9% bounds for 400 draws at 50%: 200 ± 3.29 × 10.
    assert!(
        (167..=233).contains(&answered),
        "{answered} of 400 answered"
    );
    drop(server);

    let server = Server::start(&["--udp", "--udp-rate", "0", "--fault", "duplicate=100%"]);
    let replies = udp_replies(&server, 20);
    let expected: Vec<String> = (0..20)
        .flat_map(|i| [format!("GOT:{i}"), format!("GOT:{i}")])
        .collect();
    assert_eq!(replies, expected);
}

#[test]
fn udp_delay_holds_each_reply() {
    let server = Server::start(&["--udp", "--fault", "delay=150ms"]);
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server.addr).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for i in 0..3 {
        let started = Instant::now();
        socket.send(format!("d{i}").as_bytes()).unwrap();
        let mut buf = [0; 64];
        let n = socket.recv(&mut buf).unwrap();
        let took = started.elapsed();
        assert_eq!(&buf[..n], format!("GOT:d{i}").as_bytes());
        assert!(took >= Duration::from_millis(150), "{took:?}");
    }
}

/// A request to the admin address: the status line and the body.
fn admin(server: &Server, method: &str, path: &str, body: &str) -> (String, String) {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    common::http(server.admin_addr(), request.as_bytes())
}

/// How long a round trip of `client` takes.
fn round_trip_time(client: &mut TcpStream) -> Duration {
    let started = Instant::now();
    assert_eq!(common::round_trip(client, b"t", 5), b"GOT:t");
    started.elapsed()
}

#[test]
fn faults_are_set_live_for_connections_accepted_after() {
    let server = Server::start(&["--admin", "0"]);
    let (status, body) = admin(&server, "GET", "/faults", "");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains(r#""faults":[]"#), "{body}");

    let mut before = server.connect();
    round_trip_time(&mut before);
    let (status, body) = admin(&server, "PUT", "/faults", "delay=100ms\n# a comment\n");
    assert!(status.contains("200"), "{status} {body}");
    assert!(body.contains(r#""faults":["delay=100ms"]"#), "{body}");
    let mut after = server.connect();
    let slow = round_trip_time(&mut after);
    assert!(slow >= Duration::from_millis(100), "{slow:?}");
    let fast = round_trip_time(&mut before);
    assert!(fast < Duration::from_millis(100), "{fast:?}");

    // A bad SPEC is refused with the line naming it, and changes nothing.
    let (status, body) = admin(&server, "PUT", "/faults", "close-after=5\nreset-after=x\n");
    assert!(status.contains("400"), "{status}");
    assert_eq!(
        body.trim(),
        "'reset-after=x': x is not a size (bytes, or with KiB or MiB: e.g. reset-after=0)"
    );
    let (_, body) = admin(&server, "GET", "/faults", "");
    assert!(body.contains(r#""faults":["delay=100ms"]"#), "{body}");
    assert!(body.contains(r#""delay":1"#), "{body}");
    let (_, metrics) = admin(&server, "GET", "/metrics", "");
    assert_eq!(
        common::metric::<u64>(&metrics, r#"echo_faults_total{kind="delay"}"#),
        1
    );

    // A body without a Content-Length (chunked) is refused, not read as no faults.
    let chunked = "PUT /faults HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                   e\r\nreset-after=0\n\r\n0\r\n\r\n";
    let (status, _) = common::http(server.admin_addr(), chunked.as_bytes());
    assert!(status.contains("411"), "{status}");
    let (_, body) = admin(&server, "GET", "/faults", "");
    assert!(body.contains(r#""faults":["delay=100ms"]"#), "{body}");
    // A body past 64 KiB is refused, and changes nothing.
    let (status, _) = admin(&server, "PUT", "/faults", &"#".repeat(70_000));
    assert!(status.contains("413"), "{status}");
    // A duration too large for any clock is refused with its line, not a panic.
    let (status, body) = admin(&server, "PUT", "/faults", "delay=1e300s\n");
    assert!(status.contains("400"), "{status} {body}");

    let (status, _) = admin(&server, "DELETE", "/faults", "");
    assert!(status.contains("200"), "{status}");
    let mut cleared = server.connect();
    let fast = round_trip_time(&mut cleared);
    assert!(fast < Duration::from_millis(100), "{fast:?}");
}

#[test]
fn healthz_can_be_made_to_fail_while_the_echo_goes_on() {
    let server = Server::start(&["--admin", "0"]);
    assert!(admin(&server, "GET", "/healthz", "").0.contains("200"));
    let (status, _) = admin(&server, "PUT", "/healthz", "503");
    assert!(status.contains("200"), "{status}");
    let (status, body) = admin(&server, "GET", "/healthz", "");
    assert!(status.contains("503"), "{status} {body}");
    let mut client = server.connect();
    round_trip_time(&mut client);
    assert!(admin(&server, "PUT", "/healthz", "maybe").0.contains("400"));
    admin(&server, "PUT", "/healthz", "200");
    assert!(admin(&server, "GET", "/healthz", "").0.contains("200"));
}
