//! Megabytes through one connection, and a client that never reads.

mod common;

use std::io::{ErrorKind, Write};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, pseudo_random, round_trip, stream_through};

const MIB: usize = 1 << 20;

/// Test 4: 16 MiB written and read at the same time, in each framing.
#[test]
fn sixteen_mib_through_one_connection() {
    let payload = Arc::new(pseudo_random(16 * MIB, 4));

    let plain = Server::start(&["--prefix", ""]);
    let reply = stream_through(&plain, Arc::clone(&payload));
    assert_eq!(reply.len(), payload.len());
    assert!(
        reply == *payload,
        "a plain echo gives back the payload exactly"
    );

    let lines: Arc<Vec<u8>> = Arc::new(
        payload
            .iter()
            .map(|&b| if b % 50 == 0 { b'\n' } else { b })
            .collect(),
    );
    let framed = Server::start(&["--framing", "line"]);
    let reply = stream_through(&framed, Arc::clone(&lines));
    assert!(reply == common::prefix_lines(b"GOT:", &lines));

    // Chunk framing: a prefix wherever a read ended, so only the payload with every
    // prefix taken out is fixed. No 'G' in the payload, so it cannot contain "GOT:".
    let no_g: Arc<Vec<u8>> = Arc::new(
        payload
            .iter()
            .map(|&b| if b == b'G' { b'g' } else { b })
            .collect(),
    );
    let chunked = Server::start(&[]);
    let reply = stream_through(&chunked, Arc::clone(&no_g));
    assert_eq!(&reply[..4], b"GOT:", "the reply starts with a prefix");
    let prefixes = reply.windows(4).filter(|w| w == b"GOT:").count();
    assert_eq!(reply.len(), no_g.len() + 4 * prefixes);
    let mut stripped = Vec::with_capacity(no_g.len());
    let mut rest = &reply[..];
    while let Some(at) = rest.windows(4).position(|w| w == b"GOT:") {
        stripped.extend_from_slice(&rest[..at]);
        rest = &rest[at + 4..];
    }
    stripped.extend_from_slice(rest);
    assert!(stripped == *no_g);
}

/// Test 6: a client writes 100 MiB and never reads. The server stops reading from it once
/// its replies back up (memory stays flat), and serves everyone else meanwhile.
#[test]
fn a_client_that_never_reads_cannot_grow_the_server() {
    let server = Server::start(&[]);
    let mut probe = server.connect();
    assert_eq!(round_trip(&mut probe, b"warm\n", 9), b"GOT:warm\n");
    let rss_before = server.rss_kib();

    let flooder = server.connect();
    // A write stalled this long means the server has stopped reading.
    flooder
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut writer = flooder.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let block = pseudo_random(64 * 1024, 6);
        let mut sent = 0;
        while sent < 100 * MIB {
            match writer.write(&block) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("flooding write failed: {e}"),
            }
        }
        sent
    });

    // While the flood runs and after it stalls, others are answered (a read gives up
    // after `IO_TIMEOUT`). How promptly is the scheduler's fairness, counted in turns by
    // coop's `a_flooding_client_does_not_starve_other_tasks`; the slowest round trip here
    // is reported, not asserted: it depends on the machine.
    let mut slowest = Duration::ZERO;
    while !flood.is_finished() {
        let start = Instant::now();
        assert_eq!(round_trip(&mut probe, b"ping\n", 9), b"GOT:ping\n");
        slowest = slowest.max(start.elapsed());
    }
    let sent = flood.join().unwrap();
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(round_trip(&mut probe, b"ping\n", 9), b"GOT:ping\n");
        slowest = slowest.max(start.elapsed());
    }

    let grown_kib = server.rss_kib().saturating_sub(rss_before);
    eprintln!(
        "flooder got {} MiB into the kernel before stalling; server RSS grew {grown_kib} KiB; \
         slowest other round trip {slowest:?}",
        sent / MIB
    );
    assert!(
        sent < 100 * MIB,
        "the server kept reading from a client that never reads"
    );
    assert!(grown_kib < 8 * 1024, "server RSS grew {grown_kib} KiB");
    drop(flooder);
}
