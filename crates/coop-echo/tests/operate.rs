//! Running it for real: idle timeouts, connection limits, fd exhaustion, signals, churn,
//! and clients that misbehave.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, Server, pseudo_random, round_trip, stream_through};

const MIB: usize = 1 << 20;

/// Whether the client got EOF (the server closed), reading at most until `limit`.
fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("unexpected data"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(e) => panic!("read failed: {e}"),
    }
}

/// Test 1: with `--idle-timeout 1` a silent client is closed after about a second, with a
/// clean FIN and a log line; a client that keeps talking is not.
#[test]
fn an_idle_client_is_closed_and_an_active_one_is_not() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let mut silent = server.connect();
    let mut active = server.connect();
    let start = Instant::now();

    // The active client talks every 200 ms for 2 s: twice the timeout, never silent for it.
    for i in 0..10 {
        let message = format!("still here {i}\n");
        let reply = round_trip(&mut active, message.as_bytes(), message.len() + 4);
        assert_eq!(reply, format!("GOT:{message}").as_bytes());
        thread::sleep(Duration::from_millis(200)); // the client's pace, not a synchronisation
    }
    assert!(closed_by_server(&mut silent, Duration::from_secs(5)));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "closed after {waited:?}");

    let peer = silent.local_addr().unwrap();
    server.wait_for_log(&format!("Connection closed {peer}: idle for 1 s"));
    let reply = round_trip(&mut active, b"last\n", 9);
    assert_eq!(reply, b"GOT:last\n", "the active client is still served");
}

/// Test 3: with `--max-connections 10`, of 30 clients 10 are served; the others wait,
/// and are served as served ones leave. The server never fails.
#[test]
fn the_connection_limit_holds_clients_back_until_others_leave() {
    let mut server = Server::start(&["--max-connections", "10", "--quiet"]);
    let mut clients: Vec<TcpStream> = (0..30).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(format!("{i:02}\n").as_bytes()).unwrap();
    }
    // The kernel queues connections in the order they were made, and the server takes
    // them in that order: the first ten are served.
    let mut waiting = clients.split_off(10);
    let mut served = clients;
    for (i, client) in served.iter_mut().enumerate() {
        let mut reply = [0; 7];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(reply, format!("GOT:{i:02}\n").as_bytes());
    }
    // The other twenty were not taken: the kernel still holds them in the listener's
    // accept queue. All thirty were queued before the first message was sent, so a
    // server that took them would have done so before answering any. Nor was anything
    // of theirs answered.
    assert_eq!(server.accept_queue(), 20, "the others are not accepted");
    for client in &mut waiting {
        client.set_nonblocking(true).unwrap();
        let mut byte = [0; 1];
        let read = client.read(&mut byte);
        assert!(
            matches!(&read, Err(e) if e.kind() == ErrorKind::WouldBlock),
            "a client beyond the limit got {read:?}"
        );
        client.set_nonblocking(false).unwrap();
    }
    let mut waiting: Vec<(usize, TcpStream)> = (10..).zip(waiting).collect();

    // Five leave: five waiting clients are served, in the order they queued.
    served.truncate(5);
    for (i, client) in waiting.iter_mut().take(5) {
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut reply = [0; 7];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(reply, format!("GOT:{i:02}\n").as_bytes());
    }
    assert!(server.is_running());
}

/// Test 4: out of file descriptors (64, with 100 clients), the server waits without
/// spinning, serves the clients it has, and accepts again soon after one leaves.
#[test]
fn out_of_file_descriptors_it_waits_without_spinning() {
    if !common::need("prlimit", "apt-get install util-linux") {
        return;
    }
    // A connection limit above the fd limit, so that accept really meets EMFILE.
    let server = Server::start_under(
        &["prlimit", "--nofile=64:64"],
        &["--max-connections", "1000", "--quiet"],
    );
    let mut clients: Vec<TcpStream> = (0..100).map(|_| server.connect()).collect();
    for client in &mut clients {
        client.write_all(b"x\n").unwrap();
    }
    // The first clients are served: wait for the first answer, then for exhaustion.
    let mut first = clients.remove(0);
    let mut reply = [0; 6];
    first.read_exact(&mut reply).unwrap();
    server.wait_for_log("cannot accept connections");

    // The connections it has are served all along.
    let share = common::cpu_share_while_pinging(&server, &mut first);
    assert!(
        share < 0.05,
        "the server used {:.1}% of a core",
        share * 100.0
    );

    // Who was accepted: their answer has long arrived. The rest wait in the backlog.
    let (mut served, mut queued) = common::answered_or_waiting(clients, &mut reply);
    eprintln!(
        "{} served, {} waiting for a descriptor",
        served.len() + 1,
        queued.len()
    );
    assert!(!queued.is_empty(), "the fd limit was reached");

    // Free descriptors: the next waiting client is accepted and answered within a second.
    drop(first);
    served.truncate(served.len().saturating_sub(10));
    let freed = Instant::now();
    let next = &mut queued[0];
    next.set_nonblocking(false).unwrap();
    next.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    next.read_exact(&mut reply[..6])
        .unwrap_or_else(|e| panic!("not answered within a second of fds being freed: {e}"));
    assert_eq!(&reply[..6], b"GOT:x\n");
    eprintln!(
        "answered {:?} after descriptors were freed",
        freed.elapsed()
    );
}

/// Test 5: SIGTERM with 3 clients mid-transfer: the port closes at once, each client gets
/// every byte it sent answered, and the server exits 0 within the deadline. A second
/// SIGTERM, with a client that never leaves, ends it at once.
#[test]
fn sigterm_stops_gracefully_and_a_second_one_at_once() {
    let mut server = Server::start(&["--prefix", "", "--shutdown-timeout", "20"]);
    let payload = Arc::new(pseudo_random(4 * MIB, 9));
    let transfers: Vec<_> = (0..3)
        .map(|_| {
            let mut client = server.connect();
            let mut writer = client.try_clone().unwrap();
            let payload = Arc::clone(&payload);
            // Under way before the signal: the first reply is in.
            writer.write_all(&payload[..64 * 1024]).unwrap();
            let mut first = vec![0; 64 * 1024];
            client.read_exact(&mut first).unwrap();
            assert!(first[..] == payload[..64 * 1024]);
            thread::spawn(move || {
                let sender = thread::spawn(move || {
                    for piece in payload[64 * 1024..].chunks(64 * 1024) {
                        writer.write_all(piece).unwrap();
                    }
                    writer.shutdown(Shutdown::Write).unwrap();
                });
                let mut rest = Vec::new();
                client.read_to_end(&mut rest).unwrap();
                sender.join().unwrap();
                rest
            })
        })
        .collect();

    let signalled = Instant::now();
    server.signal("TERM");
    server.wait_for_log("stopped accepting");
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "the port refuses new clients once the signal is handled"
    );
    for transfer in transfers {
        let rest = transfer.join().unwrap();
        assert!(rest[..] == payload[64 * 1024..], "every byte answered");
    }
    let status = server.wait_exit(IO_TIMEOUT);
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(20));
    server.wait_for_log("Stopped: 3 connections served");

    // A client that never leaves keeps a graceful stop waiting; a second signal doesn't.
    let mut server = Server::start(&["--shutdown-timeout", "60"]);
    let mut lingering = server.connect();
    assert_eq!(round_trip(&mut lingering, b"hi\n", 7), b"GOT:hi\n");
    server.signal("TERM");
    server.wait_for_log("stopped accepting");
    let second = Instant::now();
    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + 15));
    assert!(second.elapsed() < Duration::from_secs(5));
}

/// Test 6: a client that closes while the server writes it a large reply does not kill
/// the server with SIGPIPE (status 141 never happens).
#[test]
fn a_client_vanishing_mid_reply_does_not_kill_the_server() {
    let mut server = Server::start(&["--quiet"]);
    for _ in 0..5 {
        let mut client = server.connect();
        // Several MiB unread, so the server is blocked writing when the client goes.
        let mut writer = client.try_clone().unwrap();
        writer
            .set_write_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let block = pseudo_random(MIB, 3);
        for _ in 0..8 {
            if writer.write_all(&block).is_err() {
                break;
            }
        }
        let mut some = [0; 4096];
        client.read_exact(&mut some).unwrap();
        drop(writer);
        drop(client); // unread data: the kernel answers further writes with RST
    }
    let mut probe = server.connect();
    assert_eq!(round_trip(&mut probe, b"alive?\n", 11), b"GOT:alive?\n");
    assert!(server.is_running());
    drop(probe);
    server.signal("TERM");
    assert_eq!(server.wait_exit(IO_TIMEOUT).code(), Some(0), "not 141");
}

/// Test 7: 10,000 connect / send / receive / close cycles leave no descriptor and no
/// memory behind.
#[test]
fn churn_leaves_nothing_behind() {
    let server = Server::start(&["--quiet"]);
    let mut warm = server.connect();
    assert_eq!(round_trip(&mut warm, b"warm\n", 9), b"GOT:warm\n");
    drop(warm);
    let cycle = |i: usize| {
        let mut client = server.connect();
        let message = format!("cycle {i}\n");
        assert_eq!(
            round_trip(&mut client, message.as_bytes(), message.len() + 4),
            format!("GOT:{message}").as_bytes()
        );
        // A clean close: the server answers our FIN with its own, then closes.
        client.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    };
    for i in 0..500 {
        cycle(i);
    }
    let (fds, rss) = (server.fds(), server.rss_kib());
    for i in 500..10_500 {
        cycle(i);
    }
    // The last close may still be on its way through the server's loop.
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.fds() != fds && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    let grown = server.rss_kib().saturating_sub(rss);
    eprintln!(
        "after 10,000 cycles: {} fds (baseline {fds}), RSS grew {grown} KiB",
        server.fds()
    );
    assert_eq!(server.fds(), fds, "descriptors back to baseline");
    assert!(grown < 2048, "RSS grew {grown} KiB");
}

/// Nothing a client sends grows the server: a 10 MiB line with no newline in line
/// framing streams through; an empty line and a line in one-byte pieces are lines; a
/// burst of connections that open and close at once changes nothing.
#[test]
fn hostile_input_is_streamed_and_bounded() {
    let mut server = Server::start(&["--framing", "line", "--quiet"]);
    let mut warm = server.connect();
    assert_eq!(round_trip(&mut warm, b"warm\n", 9), b"GOT:warm\n");
    // An empty line is a line, and gets its prefix.
    assert_eq!(round_trip(&mut warm, b"\n", 5), b"GOT:\n");
    // A line that arrives a byte per segment (no Nagle) is one line: one prefix.
    for byte in b"again\n" {
        warm.write_all(&[*byte]).unwrap();
    }
    let mut reply = [0; 10];
    warm.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"GOT:again\n");
    let rss = server.rss_kib();

    let line: Vec<u8> = pseudo_random(10 * MIB, 11)
        .into_iter()
        .map(|b| if b == b'\n' { b'.' } else { b })
        .collect();
    let reply = stream_through(&server, Arc::new(line.clone()));
    assert_eq!(
        &reply[..4],
        b"GOT:",
        "one prefix, at the start of the one line"
    );
    assert!(reply[4..] == line[..]);

    for _ in 0..10_000 {
        drop(TcpStream::connect(server.addr).unwrap());
    }
    let mut probe = server.connect();
    assert_eq!(round_trip(&mut probe, b"ok?\n", 8), b"GOT:ok?\n");
    let grown = server.rss_kib().saturating_sub(rss);
    assert!(grown < 4096, "RSS grew {grown} KiB");
    assert!(server.is_running());
}

/// A client that sends and never reads is not held forever either: with
/// `--idle-timeout 1`, once it has taken no reply for a second, its connection ends.
#[test]
fn a_client_that_stops_reading_is_closed_by_the_idle_timeout() {
    let server = Server::start(&["--idle-timeout", "1"]);
    let client = server.connect();
    let mut writer = client.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let block = pseudo_random(MIB, 12);
    for _ in 0..16 {
        if writer.write_all(&block).is_err() {
            break; // stalled: the server stopped reading
        }
    }
    let peer = client.local_addr().unwrap();
    let line = server.wait_for_log(&format!("Connection closed {peer}"));
    assert!(line.contains("took no reply for 1 s"), "{line}");
}

/// `--shutdown-delay`: at SIGTERM `/healthz` says 503 at once, and the port goes on
/// accepting and serving; a second signal cuts the delay short (the port closes, and open
/// connections drain as they do without a delay), and a third exits at once.
#[test]
fn a_shutdown_delay_keeps_accepting_until_a_second_signal() {
    let args = [
        "--admin",
        "0",
        "--shutdown-delay",
        "60",
        "--shutdown-timeout",
        "60",
    ];
    let mut server = Server::start(&args);
    let admin = server.admin_addr();
    let mut open = server.connect();
    assert_eq!(round_trip(&mut open, b"hi\n", 7), b"GOT:hi\n");

    server.signal("TERM");
    server.wait_for_log("SIGTERM: still accepting for 60 s (--shutdown-delay), then stopping");
    let (status, _) = common::http(admin, b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    let mut late = server.connect();
    assert_eq!(round_trip(&mut late, b"late\n", 9), b"GOT:late\n");
    drop(late);

    let second = Instant::now();
    server.signal("TERM");
    server.wait_for_log("SIGTERM: the shutdown delay cut short");
    server.wait_for_log("SIGTERM: stopped accepting; waiting up to 60 s for");
    assert!(second.elapsed() < Duration::from_secs(5));
    assert!(
        TcpStream::connect(server.addr).is_err(),
        "the port refuses new clients once the delay is cut short"
    );
    assert_eq!(round_trip(&mut open, b"on\n", 7), b"GOT:on\n");

    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(128 + 15));
}
