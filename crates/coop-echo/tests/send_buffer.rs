//! `serve --send-buffer BYTES`: every connection's kernel send buffer is that size (what
//! the kernel may hold for a client that does not read), as `ss` reports the server's
//! side of the connection; a size out of range is refused at start.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{IO_TIMEOUT, Server, run};

/// The send buffer (`tb` in `ss -m`'s skmem) of the connection whose local port is
/// `port` and peer port `peer`.
fn send_buffer_of(port: u16, peer: u16) -> Option<u64> {
    let out = Command::new("ss")
        .args(["-tmnH", "state", "established"])
        .arg(format!("( sport = :{port} and dport = :{peer} )"))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let skmem = text.split("skmem:(").nth(1)?;
    skmem
        .split([',', ')'])
        .find_map(|field| field.strip_prefix("tb"))
        .and_then(|n| n.parse().ok())
}

#[test]
fn every_connection_gets_the_send_buffer_asked_for() {
    if !common::need("ss", "apt-get install iproute2") {
        return;
    }
    for (args, http) in [
        (&["--send-buffer", "64KiB"][..], false),
        (&["--send-buffer", "64KiB", "--http", "0"], true),
    ] {
        let server = Server::start(args);
        let addr = if http {
            server.http_addr()
        } else {
            server.addr
        };
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        // Answered once: the server has accepted it.
        if http {
            client
                .write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        } else {
            client.write_all(b"hi\n").unwrap();
        }
        let mut reply = [0; 256];
        assert!(client.read(&mut reply).unwrap() > 0);
        let me = client.local_addr().unwrap().port();
        // The kernel counts twice what was asked, for its own bookkeeping.
        assert_eq!(
            send_buffer_of(addr.port(), me),
            Some(2 * 64 * 1024),
            "{args:?}"
        );
    }
}

#[test]
fn a_send_buffer_out_of_range_is_refused() {
    let out = run(&["--port", "0", "--send-buffer", "100"], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("give 4KiB to 1GiB"), "{stderr}");
}
