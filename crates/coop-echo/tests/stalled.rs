//! What a client that sends and never reads costs the server: once the kernel's buffers
//! are full both ways, whatever the server keeps for it (the reply waiting; over TLS, the
//! record it came from) is all it costs. The README's figures: at most 12 KiB over plain
//! TCP, at most 32 KiB over TLS however the client cuts its records (issue 27: it was
//! 82 KiB with 16 KiB records, 32 KiB with 1 KiB ones).

mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use common::certs::Certs;
use common::{IO_TIMEOUT, Server};
use rustls::ClientConnection;
use rustls::pki_types::ServerName;
use socket2::SockRef;

/// Connections that stall at once: enough that their memory stands out of the noise.
const CLIENTS: usize = 100;

/// The kernel's buffers, both ways, kept small so that stalling costs the machine little
/// and comes quickly; the server's are set by `--send-buffer`.
const KERNEL_BUFFER: usize = 64 * 1024;

/// Sends until the socket refuses, many times over (the server reads in between, and
/// may free room), with `send`; panics if that takes longer than a test may.
fn send_until_refused(mut send: impl FnMut() -> std::io::Result<()>) {
    let started = Instant::now();
    let mut refused = 0;
    while refused < 50 {
        assert!(started.elapsed() < IO_TIMEOUT, "the server kept reading");
        match send() {
            Ok(()) => refused = 0,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                refused += 1;
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// A plain client that sent `write`-byte messages until neither side's buffers take more.
fn stalled_plain(addr: SocketAddr, write: usize) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    SockRef::from(&socket)
        .set_recv_buffer_size(KERNEL_BUFFER)
        .unwrap();
    socket.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; write];
    send_until_refused(|| socket.write(&chunk).map(drop));
    socket
}

/// A TLS client that has handshaken, then sent `write`-byte messages (a record each)
/// until neither side's buffers take more.
fn stalled(addr: SocketAddr, config: &Arc<rustls::ClientConfig>, write: usize) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    SockRef::from(&socket)
        .set_recv_buffer_size(KERNEL_BUFFER)
        .unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut session = ClientConnection::new(Arc::clone(config), name).unwrap();
    while session.is_handshaking() {
        session.complete_io(&mut socket).unwrap();
    }
    socket.set_nonblocking(true).unwrap();
    let chunk = vec![b'x'; write];
    // Stalled once the socket refuses even the records queued.
    send_until_refused(|| {
        if !session.wants_write() {
            session.writer().write_all(&chunk)?;
        }
        session.write_tls(&mut socket).map(drop)
    });
    socket
}

/// KiB of `server`'s memory per stalled client that `stall` makes.
fn kib_per_stalled_client(server: &Server, mut stall: impl FnMut() -> TcpStream) -> f64 {
    // One first, so that the server's one-off allocations (the thread's buffers) are in
    // the baseline.
    let _first = stall();
    let before = server.rss_kib();
    let clients: Vec<_> = (0..CLIENTS).map(|_| stall()).collect();
    let per = server.rss_kib().saturating_sub(before) as f64 / CLIENTS as f64;
    drop(clients);
    per
}

#[test]
fn a_stalled_plain_client_costs_at_most_12_kib() {
    let server = Server::start(&["--quiet", "--send-buffer", "64KiB"]);
    let per = kib_per_stalled_client(&server, || stalled_plain(server.addr, 16 * 1024));
    eprintln!("{per:.1} KiB per stalled plain connection");
    assert!(per <= 12.0, "{per:.1} KiB per stalled plain connection");
}

#[test]
fn a_stalled_tls_client_costs_at_most_32_kib_whatever_its_records() {
    let certs = Certs::new();
    let config = coop_echo::tls::client_config(Some(Path::new(&certs.path("ca.pem")))).unwrap();
    for write in [16 * 1024, 1024] {
        // A server each: memory the first let go would make the second look cheap.
        let server = certs.serve(&["--quiet", "--send-buffer", "64KiB"]);
        let per = kib_per_stalled_client(&server, || stalled(server.addr, &config, write));
        eprintln!("{write}-byte records: {per:.1} KiB per stalled TLS connection");
        assert!(
            per <= 32.0,
            "{per:.1} KiB per stalled TLS connection ({write}-byte records)"
        );
    }
}
