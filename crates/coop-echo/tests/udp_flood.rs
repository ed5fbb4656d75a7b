//! Issue 27, point 2: a flood of forged sources locks out no UDP client. The rate limit
//! is kept per source address (the port is not part of the key), so the forged datagrams
//! come from distinct addresses on 127/8 (see `forge`), and each genuine client binds an
//! address of its own.

mod common;
mod forge;

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::Server;
use forge::{Forger, forged_source, kernel_drops};

/// More sources than the server's table holds (16,384), as in the issue.
const FORGED_SOURCES: u32 = 16_500;
/// The flood's pace: each forged source comes back every 0.46 s, so all of them stay
/// "heard in the last second" (which is what locked out the old table), even one whose
/// datagram the kernel dropped once.
const FORGED_PER_SECOND: u64 = 36_000;
/// The flood ends at this count, whatever happens (about 9 s at its pace).
const MOST_FORGED: u64 = 20 * FORGED_SOURCES as u64;
/// Round trips each genuine client makes (the clients got 0 and 3 of 14).
const ROUND_TRIPS: usize = 14;
/// Sends of one request before the client gives up: a datagram the kernel drops under
/// the flood is sent again; four tries cost at most 4 of the client's 100 tokens.
const TRIES: usize = 4;
/// How long a try waits for its reply: loopback answers in well under a millisecond
/// when it answers; this only bounds the wait for a reply that will not come.
const TRY_WAIT: Duration = Duration::from_millis(250);

/// A genuine client on its own address (127.9.0.`n`).
fn client(server: SocketAddr, n: u8) -> UdpSocket {
    let socket = UdpSocket::bind((Ipv4Addr::new(127, 9, 0, n), 0)).unwrap();
    socket.connect(server).unwrap();
    socket.set_read_timeout(Some(TRY_WAIT)).unwrap();
    socket
}

/// Up to `ROUND_TRIPS` requests, each sent up to `TRIES` times until its reply comes;
/// stops at the first request never answered. Returns how many were answered.
fn round_trips(socket: &UdpSocket, name: &str) -> usize {
    let mut buf = [0; 64];
    for i in 0..ROUND_TRIPS {
        let request = format!("{name} {i}");
        let expected = format!("GOT:{request}");
        let answered = (0..TRIES).any(|_| {
            socket.send(request.as_bytes()).unwrap();
            // Replies to an earlier try of an earlier request may come late: skip them.
            loop {
                match socket.recv(&mut buf) {
                    Ok(n) if buf[..n] == *expected.as_bytes() => return true,
                    Ok(_) => continue,
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        return false;
                    }
                    Err(e) => panic!("{name}: {e}"),
                }
            }
        });
        if !answered {
            return i;
        }
    }
    ROUND_TRIPS
}

/// The forged sources in the order they are sent, with the round each is in: every
/// source in each round, each round in the same shuffled order (every 7,919th source;
/// 7,919 is a prime), so that each source comes back after exactly one round, except
/// that the first round skips every 128th, so that it fits in the table. The sources
/// that find the old table full are then among those, spread evenly over each round,
/// rather than all at its end: a burst of the old table's full scans left its debug
/// build behind the flood, and what its socket dropped meanwhile made room in the table,
/// by luck; and a place that a source going quiet frees in the old table goes at once to
/// the next forged source, not to whichever client happens to come first.
fn forged_sources() -> impl Iterator<Item = (u64, u32)> {
    let n = u64::from(FORGED_SOURCES);
    (0..)
        .filter(move |k: &u64| *k >= n || k % 128 != 0)
        .map(move |k| (k / n, (k % n * 7_919 % n) as u32))
}

/// Forged datagrams from `forged_sources`, at `FORGED_PER_SECOND`, until `stop` or
/// `MOST_FORGED`; says on `rounds` how many rounds are done each time one is.
fn flood(to: SocketAddr, stop: &AtomicBool, rounds: &mpsc::Sender<u64>) -> u64 {
    let mut forger = Forger::new(to).unwrap();
    let mut sources = forged_sources().peekable();
    let start = Instant::now();
    let mut sent = 0;
    while sent < MOST_FORGED && !stop.load(Ordering::Relaxed) {
        let due = (start.elapsed().as_secs_f64() * FORGED_PER_SECOND as f64) as u64;
        if sent >= due {
            // Pacing, not waiting for anything: the next datagrams are not due yet.
            thread::sleep(Duration::from_micros(200));
            continue;
        }
        while sent < due.min(MOST_FORGED) {
            let Some((round, source)) = sources.next() else {
                unreachable!("endless")
            };
            forger.send_from(forged_source(source), b"forged").unwrap();
            sent += 1;
            if sources.peek().is_some_and(|&(next, _)| next > round) {
                let _ = rounds.send(round + 1);
            }
        }
    }
    sent
}

/// While forged datagrams rotate over 16,500 sources (more than the table holds) at
/// 36,000 a second, a client answered before and then quiet through three rounds of the
/// flood (1.4 s), and three new clients after it, each get all 14 of their replies (at
/// `--udp-rate 100`, 14 is well within one source's allowance). The old table, full of
/// sources heard in the last second, refused them: in 6 runs of its debug build, the
/// returning client got 0 of 14 each time, and the new ones 0 of 14 in 5 (in the sixth,
/// 1,314 datagrams the kernel dropped made room for them); its release build, 0 of 14
/// for all four in 4 runs of 4.
#[test]
fn forged_sources_lock_out_neither_returning_nor_new_clients() {
    let server = Server::start(&["--udp", "--udp-rate", "100"]);
    server.wait_for_log("(udp)");
    let returning = client(server.addr, 1);
    assert_eq!(round_trips(&returning, "before"), ROUND_TRIPS);

    let stop = AtomicBool::new(false);
    let (rounds_tx, rounds) = mpsc::channel();
    let (sent, answered) = thread::scope(|scope| {
        let (addr, stop) = (server.addr, &stop);
        // The sender moves in: if the flood fails, the wait below ends.
        let flooder = scope.spawn(move || flood(addr, stop, &rounds_tx));
        // Quiet through three rounds (more than a second): every forged source has been
        // heard at least twice since.
        let waited = rounds.iter().find(|&round| round >= 3);
        let mut answered = vec![("returning", round_trips(&returning, "again"))];
        for n in 0..3 {
            let name = ["new 0", "new 1", "new 2"][n];
            answered.push((name, round_trips(&client(server.addr, 2 + n as u8), name)));
        }
        stop.store(true, Ordering::Relaxed);
        let sent = flooder.join().unwrap();
        assert!(waited.is_some(), "the flood ended before three rounds");
        (sent, answered)
    });
    let drops = kernel_drops(server.addr.port());
    for (name, got) in &answered {
        assert_eq!(
            *got, ROUND_TRIPS,
            "{name} client: {got} of {ROUND_TRIPS} answered during the flood \
             (all: {answered:?}; {sent} forged datagrams sent, {drops} dropped by the kernel)"
        );
    }
}
