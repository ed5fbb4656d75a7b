//! `serve --proxy-protocol`, driven the way a load balancer drives it: a PROXY header at
//! the start of each connection, whole or in pieces, or a bad one.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use coop_echo::proxy::{SendProxy, header};

use common::{IO_TIMEOUT, Server};

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Reads until the server closes; everything it sent (a refused client gets nothing).
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        // Unread bytes in the server's buffer turn its close into a reset.
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("reading until the server closes: {e}"),
    }
    got
}

#[test]
fn the_header_names_the_client_and_is_never_echoed() {
    let server = Server::start(&["--proxy-protocol"]);

    // Version 1, with the first data in the same segment.
    let mut v1 = server.connect();
    let mut first = header(SendProxy::V1, addr("192.0.2.7:50412"), server.addr).unwrap();
    first.extend_from_slice(b"Hello\n");
    v1.write_all(&first).unwrap();
    let mut reply = [0; 10];
    v1.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"GOT:Hello\n");
    server.wait_for_log("Connection from 192.0.2.7:50412");

    // Version 2, a byte at a time, then data on its own.
    let mut v2 = server.connect();
    let header = header(
        SendProxy::V2,
        addr("[2001:db8::7]:443"),
        addr("[::1]:25000"),
    )
    .unwrap();
    for byte in &header {
        v2.write_all(&[*byte]).unwrap();
    }
    v2.write_all(b"World\n").unwrap();
    let mut reply = [0; 10];
    v2.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"GOT:World\n");
    server.wait_for_log("Connection from [2001:db8::7]:443");

    drop(v1);
    drop(v2);
    server.wait_for_log("Connection closed 192.0.2.7:50412 (6 bytes in, 10 bytes out)");
    server.wait_for_log("Connection closed [2001:db8::7]:443 (6 bytes in, 10 bytes out)");
}

/// A load balancer's health check (v2 LOCAL, v1 UNKNOWN, or a v1 header that names the
/// connection itself, as HAProxy's checks with `send-proxy` send) is answered, and kept
/// out of the info-level log.
#[test]
fn health_checks_are_served_and_not_logged() {
    let server = Server::start(&["--proxy-protocol"]);
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec();
    let unknown = b"PROXY UNKNOWN\r\n".to_vec();
    let mut ports = Vec::new();
    for kind in 0..3 {
        let mut stream = server.connect();
        ports.push(stream.local_addr().unwrap().port());
        let mut check = match kind {
            0 => local.clone(),
            1 => unknown.clone(),
            _ => header(SendProxy::V1, stream.local_addr().unwrap(), server.addr).unwrap(),
        };
        check.extend_from_slice(b"health\n");
        stream.write_all(&check).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(read_to_close(&mut stream), b"GOT:health\n");
    }
    // The server logs in order, on one thread: once a later connection's last line is
    // out, anything about the checks would be too.
    let mut later = server.connect();
    // A byte of its own: a header alone would make it a probe, logged at debug level.
    let mut hello = header(SendProxy::V1, addr("192.0.2.9:1000"), server.addr).unwrap();
    hello.push(b'\n');
    later.write_all(&hello).unwrap();
    drop(later);
    server.wait_for_log("Connection closed 192.0.2.9:1000");
    let log = server.log();
    for port in ports {
        assert!(
            !log.contains(&format!(":{port}")),
            "a health check was logged:\n{log}"
        );
    }
}

/// Whatever a client sends in place of a header, it gets one warning line naming it and
/// the reason, nothing of it comes back, and the server goes on.
#[test]
fn a_bad_header_is_refused_with_one_warning() {
    let mut server = Server::start(&["--proxy-protocol", "--idle-timeout", "1"]);
    let mut long_v1 = b"PROXY TCP4 ".to_vec();
    long_v1.resize(140, b'7');
    long_v1.extend_from_slice(b"\r\n");
    let mut past_the_end = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x40".to_vec();
    past_the_end.extend_from_slice(&[1; 12]); // 64 announced, 12 sent, then the end
    let cases: [(&str, Vec<u8>, &str); 8] = [
        ("no header", b"Hello\n".to_vec(), "no PROXY header"),
        (
            "a v1 line with a trailing space",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n".to_vec(),
            "bad PROXY v1 header",
        ),
        (
            "a v2 length of 65,535",
            b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff".to_vec(),
            "65551 bytes",
        ),
        (
            "random bytes",
            (0..64u32).map(|i| (i * 151 % 256) as u8).collect(),
            "no PROXY header",
        ),
        ("a v1 line past 107 bytes", long_v1, "bad PROXY v1 header"),
        (
            "a v2 wrong signature",
            b"\r\n\r\n\0\r\nQUIX\n\x21\x11\x00\x0c".to_vec(),
            "no PROXY header",
        ),
        (
            "a v2 length past the end",
            past_the_end,
            "incomplete PROXY header",
        ),
        (
            "a v2 unknown version",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c".to_vec(),
            "bad PROXY v2 header",
        ),
    ];
    for (what, bytes, reason) in cases {
        let mut stream = server.connect();
        let port = stream.local_addr().unwrap().port();
        stream.write_all(&bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(
            read_to_close(&mut stream),
            b"",
            "{what}: something came back"
        );
        let line = server.wait_for_log(&format!("127.0.0.1:{port} refused"));
        assert!(line.contains("WARN"), "{what}: {line}");
        assert!(line.contains(reason), "{what}: {line}");
    }

    // A header that trickles in, a byte per 100 ms (the client's pace), is cut off at
    // the limit: the idle timeout of 1 s, as it is shorter than 5 s.
    let mut slow = server.connect();
    let port = slow.local_addr().unwrap().port();
    let header = header(SendProxy::V2, addr("192.0.2.7:1"), server.addr).unwrap();
    for byte in header.iter().cycle().take(200) {
        if slow.write_all(&[*byte]).is_err() {
            break; // the server closed
        }
        thread::sleep(Duration::from_millis(100));
        if server.log().contains(&format!("127.0.0.1:{port} refused")) {
            break;
        }
    }
    let line = server.wait_for_log(&format!("127.0.0.1:{port} refused"));
    assert!(
        line.contains("no complete PROXY header within 1 s"),
        "{line}"
    );
    slow.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(read_to_close(&mut slow), b"");
    // One warning per refused connection, each one whole line (no reason spills a CRLF).
    let log = server.log();
    assert_eq!(log.matches(" refused: ").count(), 9, "{log}");
    assert!(log.lines().all(|line| line.starts_with("20")), "{log}");

    // And everyone with a header is served as before.
    let mut good = server.connect();
    let mut hello = header_v1_from(&good, &server);
    hello.extend_from_slice(b"ok?\n");
    good.write_all(&hello).unwrap();
    let mut reply = [0; 8];
    good.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"GOT:ok?\n");
    assert!(server.is_running());
}

/// A peer that closes or resets before sending a byte is a port probe: one debug line,
/// no warning.
#[test]
fn a_probe_that_sends_nothing_is_not_warned_about() {
    let server = Server::start_with(&[], "127.0.0.1", 0, "debug", &["--proxy-protocol"]);
    let closed = server.connect();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    server.wait_for_log(&format!(
        "127.0.0.1:{closed_port} closed before a PROXY header"
    ));

    let reset = socket2::Socket::from(server.connect());
    let reset_port = reset.local_addr().unwrap().as_socket().unwrap().port();
    reset.set_linger(Some(Duration::ZERO)).unwrap();
    drop(reset); // SO_LINGER 0: the close is a reset
    server.wait_for_log(&format!(
        "127.0.0.1:{reset_port} closed before a PROXY header"
    ));
    assert!(!server.log().contains("WARN"), "{}", server.log());
}

/// On a dual-stack listener (`--host ::`) an IPv4 peer is `::ffff:a.b.c.d`: a v1 header
/// naming that very connection in IPv4 terms is still a health check.
#[test]
fn a_v1_check_on_a_dual_stack_listener_is_a_check() {
    if !common::need_ipv6_loopback() {
        return;
    }
    let server = Server::start_with(&[], "::", 0, "info", &["--proxy-protocol"]);
    let port = server.addr.port();
    let mut check = TcpStream::connect(("127.0.0.1", port)).unwrap();
    check.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut bytes = header(
        SendProxy::V1,
        check.local_addr().unwrap(),
        check.peer_addr().unwrap(),
    )
    .unwrap();
    bytes.extend_from_slice(b"health\n");
    check.write_all(&bytes).unwrap();
    check.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut check), b"GOT:health\n");
    // A later client's lines come after anything about the check (one thread logs).
    let mut later = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut named = header(
        SendProxy::V1,
        addr("192.0.2.9:1000"),
        later.peer_addr().unwrap(),
    )
    .unwrap();
    named.push(b'\n'); // a byte of its own: not a probe
    later.write_all(&named).unwrap();
    drop(later);
    server.wait_for_log("Connection closed 192.0.2.9:1000");
    assert!(!server.log().contains("127.0.0.1"), "{}", server.log());
}

fn header_v1_from(stream: &TcpStream, server: &Server) -> Vec<u8> {
    header(SendProxy::V1, stream.local_addr().unwrap(), server.addr).unwrap()
}

/// `client --send-proxy` and `bench --send-proxy` drive a `--proxy-protocol` server
/// without a load balancer: the header goes first, with the connection's own address.
#[test]
fn client_and_bench_can_send_the_header() {
    let server = Server::start(&["--proxy-protocol"]);
    let target = server.addr.to_string();
    for version in ["v1", "v2"] {
        let out = common::run(&["client", &target, "--send-proxy", version], b"Hello\n");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "GOT:Hello\n");

        let port = server.addr.port().to_string();
        let out = common::run(
            &[
                "bench",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "-q",
                "-c",
                "4",
                "-n",
                "200",
                "--send-proxy",
                version,
                "--json",
            ],
            b"",
        );
        assert!(out.status.success(), "{out:?}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["messages"].as_u64(), Some(200), "{report}");
        assert_eq!(report["errors"].as_u64(), Some(0), "{report}");
    }
    // With v2, a client and 4 bench connections, each named by its own header (a v1
    // header that names its own connection is what HAProxy's checks send: debug level);
    // their lines reach the log as the server writes them.
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while server
        .log()
        .matches("INFO Connection closed 127.0.0.1:")
        .count()
        < 5
    {
        assert!(std::time::Instant::now() < deadline, "{}", server.log());
        thread::sleep(Duration::from_millis(10)); // polling the log
    }
    let log = server.log();
    assert!(!log.contains("refused"), "{log}");
    assert_eq!(
        log.matches("INFO Connection from 127.0.0.1:").count(),
        5,
        "{log}"
    );
}

/// A client whose lines get no reply says so and fails: here, one that sends no header
/// to a `--proxy-protocol` server, which refuses it.
#[test]
fn a_client_whose_lines_get_no_reply_says_so() {
    let server = Server::start(&["--proxy-protocol"]);
    let out = common::run(&["client", &server.addr.to_string()], b"Hello\n");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("1 line got no reply"), "{stderr}");
}

/// A connection that ends after its header, before a byte of its own, is a probe (a
/// load balancer's check, HAProxy's plain one among them): logged at debug level only,
/// on the TCP port and on the HTTP listener, whether it closes or resets, and whether
/// the end comes after the server read the header or before.
#[test]
fn a_header_and_nothing_more_is_a_probe() {
    let args = ["--proxy-protocol", "--http", "0"];
    let server = Server::start_with(&[], "127.0.0.1", 0, "debug", &args);
    let http = server.http_addr();
    let mut n = 0;
    for target in [server.addr, http] {
        for version in [SendProxy::V1, SendProxy::V2] {
            for (reset, read_first) in [(false, true), (true, true), (false, false), (true, false)]
            {
                n += 1;
                let source = addr(&format!("192.0.2.{n}:1000"));
                let mut stream = TcpStream::connect(target).unwrap();
                stream
                    .write_all(&header(version, source, target).unwrap())
                    .unwrap();
                if read_first {
                    server.wait_for_log(&format!("Connection from {source} comes through"));
                }
                let stream = socket2::Socket::from(stream);
                if reset {
                    stream.set_linger(Some(Duration::ZERO)).unwrap();
                }
                drop(stream);
            }
        }
    }
    // The server logs in order, on one thread: once a later connection's last line is
    // out, anything about the probes would be too.
    let mut later = server.connect();
    let mut hello = header(SendProxy::V1, addr("198.51.100.1:1000"), server.addr).unwrap();
    hello.extend_from_slice(b"hi\n");
    later.write_all(&hello).unwrap();
    later.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_to_close(&mut later), b"GOT:hi\n");
    server.wait_for_log("Connection closed 198.51.100.1:1000");
    let log = server.log();
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("192.0.2.") && !l.contains("DEBUG"))
        .collect();
    assert!(loud.is_empty(), "probes logged above debug: {loud:#?}");
    assert!(
        log.contains("INFO Connection from 198.51.100.1:1000\n"),
        "{log}"
    );
}
