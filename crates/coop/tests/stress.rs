//! Many tasks share a few sockets through every combinator at once (select, join,
//! `FuturesUnordered`, timeouts, yields), in orders drawn from a seeded generator: every
//! byte written is read exactly once, no task hangs, and nothing is left waiting.
#![cfg(not(miri))]

mod common;

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{bounded, pair};
use coop::net::TcpStream;
use coop::time::{sleep, timeout};
use coop::{Runtime, spawn, yield_now};
use futures::channel::mpsc;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

const SEEDS: u64 = 40;
const SOCKETS: usize = 4;
const READERS: u64 = 8;
const WRITES: usize = 400;

/// xorshift64: the same seed gives the same run, so a failure names its seed.
struct Draw(Cell<u64>);

impl Draw {
    fn new(seed: u64) -> Draw {
        Draw(Cell::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1))
    }

    fn below(&self, n: u64) -> u64 {
        let mut x = self.0.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0.set(x);
        x % n
    }
}

/// Reads from the sockets' server sides in every way a user might, until told to stop,
/// sending the count of each read to `read`.
async fn reader(
    seed: u64,
    sockets: Rc<Vec<(TcpStream, TcpStream)>>,
    read: mpsc::UnboundedSender<usize>,
    stop: Rc<Cell<bool>>,
) -> io::Result<()> {
    let draw = Draw::new(seed);
    let any = || &sockets[draw.below(SOCKETS as u64) as usize].1;
    let count = |n: usize| {
        let _ = read.unbounded_send(n);
    };
    let mut buf = [0; 7];
    while !stop.get() {
        let (a, b) = (any(), any());
        let short = Duration::from_micros(draw.below(3000));
        match draw.below(7) {
            0 => {
                if let Ok(n) = timeout(short, a.read(&mut buf)).await {
                    count(n?);
                }
            }
            1 => {
                let (mut one, mut two) = ([0; 5], [0; 3]);
                futures::select_biased! {
                    n = a.read(&mut one).fuse() => count(n?),
                    n = b.read(&mut two).fuse() => count(n?),
                    () = sleep(short).fuse() => {}
                }
            }
            2 => {
                let mut waiting: FuturesUnordered<_> = (0..3).map(|_| any().readable()).collect();
                let _ = timeout(short, waiting.next()).await;
            }
            3 => {
                let mut some = [0; 4];
                let (n, _) = futures::join!(
                    timeout(short, a.read(&mut some)),
                    timeout(short, b.readable())
                );
                if let Ok(n) = n {
                    count(n?);
                }
            }
            4 => {
                // Ready in a combinator, then read without waiting.
                let mut waiting = FuturesUnordered::new();
                waiting.push(a.readable());
                if timeout(short, waiting.next()).await.is_ok() {
                    drop(waiting);
                    match a.try_read(&mut buf) {
                        Ok(n) => count(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            5 => {
                let either =
                    futures::future::select(Box::pin(a.readable()), Box::pin(b.writable()));
                let _ = timeout(short, either).await;
            }
            _ => yield_now().await,
        }
    }
    Ok(())
}

#[test]
fn shared_sockets_under_every_combinator_lose_nothing_and_leave_nothing() {
    for seed in 0..SEEDS {
        bounded(Duration::from_secs(60), move || {
            let runtime = Runtime::new()?;
            runtime.block_on(async move {
                let mut sockets = Vec::new();
                for _ in 0..SOCKETS {
                    sockets.push(pair().await?);
                }
                let sockets = Rc::new(sockets);
                let (counts, mut read) = mpsc::unbounded();
                let stop = Rc::new(Cell::new(false));
                let readers: Vec<_> = (0..READERS)
                    .map(|i| {
                        let (sockets, counts, stop) =
                            (Rc::clone(&sockets), counts.clone(), Rc::clone(&stop));
                        spawn(reader(seed * 100 + i, sockets, counts, stop))
                    })
                    .collect();
                let draw = Draw::new(seed + 1_000);
                let mut sent = 0;
                for _ in 0..WRITES {
                    let client = &sockets[draw.below(SOCKETS as u64) as usize].0;
                    let bytes = vec![1; 1 + draw.below(9) as usize];
                    client.write_all(&bytes).await?;
                    sent += bytes.len();
                    if draw.below(3) == 0 {
                        sleep(Duration::from_micros(draw.below(500))).await;
                    } else {
                        yield_now().await;
                    }
                }
                let mut received = 0;
                while received < sent {
                    received += timeout(Duration::from_secs(10), read.next())
                        .await
                        .unwrap_or_else(|_| panic!("seed {seed}: {received} of {sent} bytes read"))
                        .expect("the readers hold senders");
                }
                assert_eq!(received, sent, "seed {seed}: read twice");
                stop.set(true);
                for task in readers {
                    let ended = timeout(Duration::from_secs(5), task).await;
                    ended
                        .unwrap_or_else(|_| panic!("seed {seed}: a reader hung"))
                        .unwrap()?;
                }
                assert_eq!(read.try_recv().ok(), None, "seed {seed}: read twice");
                let stats = coop::stats().unwrap();
                assert_eq!(
                    (
                        stats.waiters,
                        stats.parked_read,
                        stats.parked_write,
                        stats.timers
                    ),
                    (0, 0, 0, 0),
                    "seed {seed}: {stats:?}"
                );
                io::Result::Ok(())
            })
        })
        .unwrap();
    }
}
