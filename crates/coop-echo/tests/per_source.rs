//! `--max-connections-per-source N`: one client address cannot hold every place under
//! `--max-connections` (ten clients that each sent a byte every two seconds kept ten
//! places, and a new client waited 18 s). Its connections past N are closed at once,
//! on the TCP port, over TLS and on `--http`, and other addresses are served.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use common::certs::Certs;
use common::{IO_TIMEOUT, Server};
use coop_echo::proxy::{SendProxy, header};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

/// The limits of every test here: a source's share, and ten places in all.
const LIMITS: [&str; 4] = [
    "--max-connections",
    "10",
    "--max-connections-per-source",
    "3",
];

/// A client connected to `addr` from the loopback address `from`, its reads and writes
/// bounded.
fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    let local: SocketAddr = format!("{from}:0").parse().unwrap();
    socket
        .bind(&local.into())
        .expect("bind the client's address");
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Sends `message` and reads the reply of `reply_len` bytes: `None` if the server closed
/// the connection instead (EOF, or a reset for the bytes it left unread).
fn exchange(stream: &mut TcpStream, message: &[u8], reply_len: usize) -> Option<Vec<u8>> {
    // A write to a connection the server closed may fail: the read says so.
    let _ = stream.write_all(message);
    let mut reply = vec![0; reply_len];
    match stream.read_exact(&mut reply) {
        Ok(()) => Some(reply),
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ) =>
        {
            None
        }
        Err(e) => panic!("neither a reply nor a close: {e}"),
    }
}

/// `clients`, all open at once, each sent `message`: how many got the echo, the rest
/// having been closed. The served stay open (returned), holding their places.
fn served(clients: Vec<TcpStream>, message: &[u8]) -> (usize, Vec<TcpStream>) {
    let mut kept = Vec::new();
    for mut client in clients {
        if let Some(reply) = exchange(&mut client, message, 4 + message.len()) {
            assert_eq!(reply, [b"GOT:", message].concat());
            kept.push(client);
        }
    }
    (kept.len(), kept)
}

/// One address opens ten connections: three are served, seven closed at once, each
/// refusal a warning; an address of its own is served beside them, and a place given
/// back is taken again. On two threads: the share is counted across them.
#[test]
fn a_source_gets_its_share_and_others_are_served() {
    let mut args = LIMITS.to_vec();
    args.extend(["--threads", "2"]);
    let server = Server::start(&args);
    let squatters: Vec<TcpStream> = (0..10)
        .map(|_| connect_from("127.0.0.1", server.addr))
        .collect();
    let (n, mut kept) = served(squatters, b"tick\n");
    assert_eq!(n, 3, "{}", server.log());
    let log = server.wait_until("seven refusals", |log| {
        log.matches(
            "refused: 3 connections already open from its address (--max-connections-per-source)",
        )
        .count()
            >= 7
    });
    assert!(log.contains("WARN Connection from 127.0.0.1:"), "{log}");

    // Another address: served at once, though its neighbour holds its share.
    let mut other = connect_from("127.0.0.2", server.addr);
    assert_eq!(
        exchange(&mut other, b"hi\n", 7).as_deref(),
        Some(&b"GOT:hi\n"[..])
    );

    // One of the three goes: its place is the next connection's (free once its closing
    // line is out).
    let gone = kept.pop().unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    server.wait_for_log(&format!("Connection closed {gone_addr}"));
    let (n, _again) = served(
        (0..2)
            .map(|_| connect_from("127.0.0.1", server.addr))
            .collect(),
        b"again\n",
    );
    assert_eq!(n, 1, "{}", server.log());
}

/// Behind a load balancer, the address that counts is the one the PROXY header names:
/// three connections for 192.0.2.7, all from the balancer's one address, then no more,
/// while 192.0.2.8 is served.
#[test]
fn behind_a_proxy_the_header_names_the_source() {
    let mut args = LIMITS.to_vec();
    args.push("--proxy-protocol");
    let server = Server::start(&args);
    let relayed = |client: &str| {
        let mut stream = server.connect();
        let mut first = header(SendProxy::V1, client.parse().unwrap(), server.addr).unwrap();
        first.extend_from_slice(b"hello\n");
        let reply = exchange(&mut stream, &first, 10);
        reply.map(|reply| {
            assert_eq!(reply, b"GOT:hello\n");
            stream
        })
    };
    let held: Vec<TcpStream> = (0..10)
        .filter_map(|i| relayed(&format!("192.0.2.7:{}", 40000 + i)))
        .collect();
    assert_eq!(held.len(), 3, "{}", server.log());
    server.wait_for_log("Connection from 192.0.2.7:4000");
    server.wait_for_log("refused: 3 connections already open from its address");
    assert!(relayed("192.0.2.8:40000").is_some(), "{}", server.log());
}

/// Over TLS a client over its share is closed before its handshake: it gets no
/// ServerHello, and three others finish theirs and are echoed.
#[test]
fn over_tls_the_share_is_taken_before_the_handshake() {
    let certs = Certs::new();
    let server = certs.serve(&LIMITS);
    let trust =
        coop_echo::tls::client_config(Some(std::path::Path::new(&certs.path("ca.pem")))).unwrap();
    let sockets: Vec<TcpStream> = (0..10)
        .map(|_| connect_from("127.0.0.1", server.addr))
        .collect();
    let mut finished = Vec::new();
    for socket in sockets {
        let name = ServerName::try_from("localhost").unwrap();
        let session = ClientConnection::new(Arc::clone(&trust), name).unwrap();
        let mut client = StreamOwned::new(session, socket);
        let echoed = client.write_all(b"tls\n").is_ok() && {
            let mut reply = [0; 8];
            client.read_exact(&mut reply).is_ok() && &reply == b"GOT:tls\n"
        };
        if echoed {
            finished.push(client);
        }
    }
    assert_eq!(finished.len(), 3, "{}", server.log());
    let log = server.wait_until("seven refusals", |log| {
        log.matches("(--max-connections-per-source)").count() >= 7
    });
    assert!(!log.contains("TLS handshake with"), "refused before: {log}");
}

/// On `--http`, a client over its share is closed before its request is read; the HTTP
/// listener and the TCP port count against one share.
#[test]
fn on_http_the_share_is_taken_before_the_request() {
    let mut args = LIMITS.to_vec();
    args.extend(["--http", "0"]);
    let server = Server::start(&args);
    let http = server.http_addr();
    // One place on the TCP port, held.
    let (n, _tcp) = served(vec![connect_from("127.0.0.1", server.addr)], b"tcp\n");
    assert_eq!(n, 1);
    let request = b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut answered = Vec::new();
    for _ in 0..10 {
        let mut client = connect_from("127.0.0.1", http);
        let _ = client.write_all(request);
        let mut head = [0; 12];
        if client.read_exact(&mut head).is_ok() {
            assert_eq!(&head, b"HTTP/1.1 200");
            answered.push(client);
        }
    }
    assert_eq!(answered.len(), 2, "{}", server.log());
    let mut other = connect_from("127.0.0.2", http);
    other.write_all(request).unwrap();
    let mut head = [0; 12];
    other.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
}

/// The limit is off unless asked for: a load generator's thousand connections from one
/// address are all served.
#[test]
fn without_the_option_one_address_may_open_many() {
    let server = Server::start(&["--max-connections", "100"]);
    let clients: Vec<TcpStream> = (0..50)
        .map(|_| connect_from("127.0.0.1", server.addr))
        .collect();
    let (n, _kept) = served(clients, b"x\n");
    assert_eq!(n, 50);
}
