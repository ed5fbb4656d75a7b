//! A listener on `::` takes IPv4 clients too (dual stack), which the OS names as
//! IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`): every log line names them as the
//! IPv4 addresses they are, whatever they came over (TCP, TLS, HTTP, UDP).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};

use common::{IO_TIMEOUT, Server, round_trip};

/// The port of the server's `Listening on ...` line that contains `marker`.
fn port_of(server: &Server, marker: &str) -> u16 {
    let line = server.wait_for_log(marker);
    let addr = line
        .split("Listening on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|addr| addr.trim_start_matches("http://"))
        .unwrap_or_default();
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| panic!("{line}"));
    addr.port()
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_are_logged_as_ipv4() {
    if !common::need_ipv6_loopback() {
        return;
    }
    let args = ["--udp", "--udp-rate", "1", "--http", "[::]:0"];
    let server = Server::start_with(&[], "::", 0, "info", &args);
    let port = server.addr.port();

    // TCP.
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = tcp.local_addr().unwrap();
    assert_eq!(round_trip(&mut tcp, b"hi\n", 7), b"GOT:hi\n");
    drop(tcp);
    let from = format!("Connection from {me}\n");
    server.wait_until(&from, |log| log.contains(&from));
    server.wait_for_log(&format!("Connection closed {me} (3 bytes in, 7 bytes out)"));

    // HTTP: the log, and the JSON's `client`.
    let http_port = port_of(&server, "(HTTP/1.1, HTTP/2, WebSocket)");
    let mut http = TcpStream::connect(("127.0.0.1", http_port)).unwrap();
    http.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = http.local_addr().unwrap();
    http.write_all(b"GET /who HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    let json: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
    assert_eq!(json["client"], me.to_string(), "{json}");
    server.wait_for_log(&format!("Connection from {me} (http)"));
    server.wait_for_log(&format!("Connection closed {me} ("));

    // UDP: past the rate limit (1 a second), the warning names the source.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = udp.local_addr().unwrap();
    for _ in 0..2 {
        udp.send_to(b"ping", ("127.0.0.1", port)).unwrap();
    }
    let mut reply = [0; 16];
    let (n, _) = udp.recv_from(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"GOT:ping");
    server.wait_for_log(&format!("(last from {me})"));

    let log = server.log();
    assert!(!log.contains("::ffff:"), "{log}");

    // TLS.
    let certs = common::certs::Certs::new();
    let (cert, key) = (certs.path("cert.pem"), certs.path("key.pem"));
    let tls = Server::start_with(
        &[],
        "::",
        0,
        "info",
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    let target = format!("127.0.0.1:{}", tls.addr.port());
    let ca = certs.path("ca.pem");
    let out = common::run(&["client", &target, "--tls", "--tls-ca", &ca], b"hi\n");
    assert!(out.status.success(), "{out:?}");
    let from = tls.wait_for_log("(TLS 1.3)");
    assert!(from.contains("Connection from 127.0.0.1:"), "{from}");
    tls.wait_for_log("Connection closed 127.0.0.1:");
    // A client that does not speak TLS: the warning names it too.
    let mut plain = TcpStream::connect(("127.0.0.1", tls.addr.port())).unwrap();
    plain.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let me = plain.local_addr().unwrap();
    plain.write_all(b"hello, not TLS\n").unwrap();
    let _ = plain.read_to_end(&mut Vec::new());
    tls.wait_for_log(&format!("TLS handshake with {me} failed"));
    let log = tls.log();
    assert!(!log.contains("::ffff:"), "{log}");
}
