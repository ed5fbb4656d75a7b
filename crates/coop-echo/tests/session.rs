//! The seed's session and what a real client can do to one connection.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::thread;

use common::{IO_TIMEOUT, Server, pseudo_random, round_trip, stream_through};

/// Test 1: `Hello` / `GOT:Hello`, `World` / `GOT:World`, then the log says so.
#[test]
fn the_seed_session() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"Hello\n", 10), b"GOT:Hello\n");
    assert_eq!(round_trip(&mut client, b"World\n", 10), b"GOT:World\n");
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the replies, then EOF");

    // The closing line comes after the client saw EOF.
    let peer = client.local_addr().unwrap();
    server.wait_for_log(&format!(
        "Connection closed {peer} (12 bytes in, 20 bytes out)"
    ));
    assert!(server.log().contains(&format!("Connection from {peer}")));
}

/// Test 2: the same session through the real `nc`, typed a line at a time.
#[test]
fn the_seed_session_through_nc() {
    if !common::need("nc", "apt-get install netcat-openbsd") {
        return;
    }
    let server = Server::start(&[]);
    // -N: shut the socket down when stdin ends, then read until the server closes.
    let mut nc = Command::new("nc")
        .args(["-N", "127.0.0.1", &server.addr.port().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start nc");
    let mut stdin = nc.stdin.take().unwrap();
    let stdout = nc.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    for word in ["Hello", "World"] {
        // One write, as a person's terminal sends a line: `writeln!` may split it in two,
        // and chunk framing would then answer two chunks.
        stdin.write_all(format!("{word}\n").as_bytes()).unwrap();
        let reply = lines
            .recv_timeout(IO_TIMEOUT)
            .expect("a reply line from nc");
        assert_eq!(reply, format!("GOT:{word}"));
    }
    drop(stdin);
    let (status_tx, status) = mpsc::channel();
    thread::spawn(move || status_tx.send(nc.wait()));
    let status = status
        .recv_timeout(IO_TIMEOUT)
        .expect("nc exits once the server closes");
    assert!(status.unwrap().success());
    assert!(lines.recv_timeout(IO_TIMEOUT).is_err(), "no more output");
}

/// Test 5: a client sends 1 MiB, shuts down its write side, reads to EOF: every byte comes
/// back before the EOF.
#[test]
fn half_close_gets_every_byte_then_eof() {
    let payload = Arc::new(pseudo_random(1 << 20, 5));
    let plain = Server::start(&["--prefix", ""]);
    assert!(stream_through(&plain, Arc::clone(&payload)) == *payload);

    let lines: Vec<u8> = payload
        .iter()
        .map(|&b| if b % 61 == 0 { b'\n' } else { b })
        .collect();
    let framed = Server::start(&["--framing", "line"]);
    let reply = stream_through(&framed, Arc::new(lines.clone()));
    assert!(reply == common::prefix_lines(b"GOT:", &lines));
}

/// Test 7: a client that resets its connection mid-transfer ends only that connection.
#[test]
fn a_reset_ends_only_that_connection() {
    let mut server = Server::start(&[]);
    let mut bystander = server.connect();
    assert_eq!(round_trip(&mut bystander, b"before\n", 11), b"GOT:before\n");

    for _ in 0..20 {
        let client = server.connect();
        let big = pseudo_random(4 << 20, 7);
        let mut writer = client.try_clone().unwrap();
        // Send megabytes without reading, so the server is mid-write, then reset.
        let sender = thread::spawn(move || {
            let _ = writer.write_all(&big);
        });
        let mut some = [0; 4096];
        let mut got = 0;
        let mut reader = &client;
        while got < 64 * 1024 {
            got += reader.read(&mut some).unwrap();
        }
        // Linger 0: closing sends RST instead of FIN.
        socket2::SockRef::from(&client)
            .set_linger(Some(std::time::Duration::ZERO))
            .unwrap();
        drop(client);
        let _ = sender.join();
    }

    assert!(server.is_running());
    assert_eq!(round_trip(&mut bystander, b"after\n", 10), b"GOT:after\n");
    let mut newcomer = server.connect();
    assert_eq!(round_trip(&mut newcomer, b"new\n", 8), b"GOT:new\n");
}

/// Test 8: bytes are bytes: every value, NULs, the prefix itself, 1 byte, 65,537 bytes.
#[test]
fn binary_payloads_come_back_exactly() {
    let every_byte: Vec<u8> = (0..=255).collect();
    let payloads: Vec<Vec<u8>> = vec![
        every_byte.clone(),
        vec![0; 1000],
        b"GOT:GOT:\0GOT:".to_vec(),
        vec![b'x'],
        pseudo_random(65_537, 8),
    ];

    let plain = Server::start(&["--prefix", ""]);
    let mut client = plain.connect();
    for payload in &payloads {
        assert!(round_trip(&mut client, payload, payload.len()) == *payload);
    }

    // Small payloads arrive as one chunk on loopback: one prefix each.
    let seed = Server::start(&[]);
    let mut client = seed.connect();
    for payload in &payloads[..4] {
        let reply = round_trip(&mut client, payload, payload.len() + 4);
        assert_eq!(&reply[..4], b"GOT:");
        assert_eq!(&reply[4..], &payload[..]);
    }

    // A line may span payloads, so each gets a connection of its own.
    let lines = Server::start(&["--framing", "line", "--prefix", "\u{1F980}"]);
    for payload in &payloads {
        let mut client = lines.connect();
        let expected = common::prefix_lines("\u{1F980}".as_bytes(), payload);
        assert!(round_trip(&mut client, payload, expected.len()) == expected);
    }
}
