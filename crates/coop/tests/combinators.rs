//! Sockets under the `futures` crate's combinators, as users write them: select, join,
//! `FuturesUnordered`, timeouts, aborts and panics around waits on shared sockets. Each
//! test ends with nobody left waiting on any socket (`Stats`): a wake or a drop took
//! every waiter out.
#![cfg(not(miri))]

mod common;

use std::cell::Cell;
use std::io::{self, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use common::{LIMIT, bounded, pair};
use coop::net::{TcpListener, TcpStream};
use coop::time::timeout;
use coop::{Runtime, Stats, spawn, yield_now};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};

/// Longer than any wait below takes: reached only by a task that was never woken.
const HANG: Duration = Duration::from_secs(5);

#[track_caller]
fn assert_no_waiters(stats: Stats) {
    assert_eq!(
        (stats.waiters, stats.parked_read, stats.parked_write),
        (0, 0, 0),
        "{stats:?}"
    );
}

fn stats() -> Stats {
    coop::stats().expect("inside a runtime")
}

/// A std client connected to a coop server side: the test writes without awaiting.
async fn std_pair() -> io::Result<(std::net::TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept().await?;
    Ok((client, server))
}

/// Six reads in a `FuturesUnordered` (whose waker is the combinator's, not the task's):
/// three sockets turn ready at once and their reads complete; the other three futures
/// are dropped unwoken, and take their places back.
#[test]
fn reads_in_futures_unordered_woken_together_or_dropped_leave_no_waiter() {
    bounded(LIMIT, || {
        let runtime = Runtime::new()?;
        runtime.block_on(async {
            let mut pairs = Vec::new();
            for _ in 0..6 {
                pairs.push(std_pair().await?);
            }
            let mut reads: FuturesUnordered<_> = pairs
                .iter()
                .enumerate()
                .map(|(i, (_, server))| async move {
                    let mut buf = [0; 4];
                    (i, server.read(&mut buf).await)
                })
                .collect();
            assert!(futures::poll!(reads.next()).is_pending());
            assert_eq!(stats().waiters, 6);
            for (client, _) in &pairs[..3] {
                (&*client).write_all(b"x")?;
            }
            let mut done = Vec::new();
            for _ in 0..3 {
                let (i, read) = timeout(HANG, reads.next())
                    .await
                    .expect("woken")
                    .expect("3 left");
                assert_eq!(read?, 1);
                done.push(i);
            }
            done.sort_unstable();
            assert_eq!(done, [0, 1, 2]);
            drop(reads);
            assert_no_waiters(stats());
            io::Result::Ok(())
        })?;
        assert_no_waiters(runtime.stats());
        io::Result::Ok(())
    })
    .unwrap();
}

/// One task waits in both directions of one socket at once (a read and a write that
/// fills the socket, in a `join!`): both slots are the same task's, and each is woken.
#[test]
fn one_task_reading_and_writing_one_socket_in_a_join_is_woken_for_each() {
    const BIG: usize = 16 << 20;
    bounded(LIMIT, || {
        coop::block_on(async {
            let (client, server) = pair().await?;
            let both = spawn(async move {
                let mut buf = [0; 4];
                let block = vec![1; BIG];
                let (read, written) =
                    futures::join!(server.read(&mut buf), server.write_all(&block));
                (read, written)
            });
            // Its first poll parks the read at once, and the write once the socket is full.
            while stats().parked_write == 0 {
                yield_now().await;
            }
            assert_eq!((stats().parked_read, stats().parked_write), (1, 1));
            client.write_all(b"abc").await?;
            let mut sink = vec![0; 1 << 20];
            let mut received = 0;
            while received < BIG {
                received += client.read(&mut sink).await?;
            }
            let (read, written) = timeout(HANG, both).await.expect("woken").unwrap();
            assert_eq!(read?, 3);
            written?;
            assert_no_waiters(stats());
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// Three tasks wait to read one socket: one wake reaches all three.
#[test]
fn three_tasks_waiting_to_read_one_socket_are_all_woken() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (mut client, server) = std_pair().await?;
            let server = Rc::new(server);
            let waiting: Vec<_> = (0..3)
                .map(|_| {
                    let server = Rc::clone(&server);
                    spawn(async move { server.readable().await })
                })
                .collect();
            yield_now().await;
            assert_eq!(stats().waiters, 3);
            client.write_all(b"x")?;
            for task in waiting {
                timeout(HANG, task).await.expect("woken").unwrap()?;
            }
            assert_no_waiters(stats());
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// A `select!` over reads of two sockets that both turn ready: each read completes in
/// its turn (the second one's wake is not lost when the first branch wins).
#[test]
fn a_select_over_two_sockets_ready_together_takes_both_in_turn() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (mut first, one) = std_pair().await?;
            let (mut second, two) = std_pair().await?;
            let selecting = spawn(async move {
                let (mut a, mut b) = ([0; 8], [0; 8]);
                let mut read = 0;
                while read < 2 {
                    futures::select_biased! {
                        n = one.read(&mut a).fuse() => read += n.map(|_| 1)?,
                        n = two.read(&mut b).fuse() => read += n.map(|_| 1)?,
                    }
                }
                io::Result::Ok(read)
            });
            yield_now().await;
            first.write_all(b"a")?;
            second.write_all(b"b")?;
            assert_eq!(timeout(HANG, selecting).await.expect("woken").unwrap()?, 2);
            assert_no_waiters(stats());
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// A task aborted while it waits on a socket is never polled again, not even when the
/// socket turns ready before the runtime has dropped it.
#[test]
fn an_aborted_task_is_not_polled_when_its_socket_turns_ready() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (mut client, server) = std_pair().await?;
            let polled = Rc::new(Cell::new(0));
            let reader = spawn({
                let polled = Rc::clone(&polled);
                async move {
                    let mut buf = [0; 8];
                    let read = server.read(&mut buf).await;
                    polled.set(polled.get() + 1);
                    read
                }
            });
            yield_now().await;
            reader.abort();
            client.write_all(b"x")?;
            assert!(
                timeout(HANG, reader)
                    .await
                    .expect("dropped")
                    .unwrap_err()
                    .is_cancelled()
            );
            assert_eq!(polled.get(), 0);
            assert_no_waiters(stats());
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// A read under a timeout, with its data written by another thread just as the timeout
/// ends, fifty times: whichever wins, no byte is lost.
#[test]
fn a_read_whose_timeout_ends_as_its_data_comes_loses_nothing() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (client, server) = std_pair().await?;
            let limit = Duration::from_millis(2);
            for round in 0..50 {
                let start = Instant::now();
                let mut writer = client.try_clone()?;
                let writing = std::thread::spawn(move || {
                    // Spins rather than sleeps, to hit the timeout's end closely.
                    while start.elapsed() < limit {}
                    writer.write_all(b"x")
                });
                let mut buf = [0; 8];
                let read = timeout(limit, server.read(&mut buf)).await;
                writing.join().expect("the writer does not panic")?;
                let n = match read {
                    Ok(read) => read?,
                    // The timeout won: the byte must still be there to read.
                    Err(_) => timeout(HANG, server.read(&mut buf))
                        .await
                        .expect("data lost")?,
                };
                assert_eq!(n, 1, "round {round}");
                assert_no_waiters(stats());
            }
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// Three runtimes used in turn on one thread, their `block_on` futures panicking every
/// third round while waiting in a combinator: each runtime's echo task goes on, and each
/// `block_on` finds its runtime as the last one left it.
#[test]
fn runtimes_used_in_turn_survive_their_root_futures_panics() {
    bounded(LIMIT, || {
        let runtimes: Vec<Runtime> = (0..3).map(|_| Runtime::new()).collect::<io::Result<_>>()?;
        let mut clients = Vec::new();
        let mut echoes = Vec::new();
        for runtime in &runtimes {
            let (client, echo) = runtime.block_on(async {
                let (client, server) = pair().await?;
                io::Result::Ok((client, spawn(echo_all(server))))
            })?;
            echoes.push(echo);
            clients.push(client);
        }
        for round in 0..20 {
            for (runtime, client) in runtimes.iter().zip(&clients) {
                let ended = catch_unwind(AssertUnwindSafe(|| {
                    runtime.block_on(async {
                        client.write_all(b"ping").await?;
                        let mut buf = [0; 4];
                        let mut got = 0;
                        while got < 4 {
                            got += client.read(&mut buf[got..]).await?;
                        }
                        assert_eq!(&buf, b"ping");
                        if round % 3 == 0 {
                            let mut waiting = FuturesUnordered::new();
                            waiting.push(client.readable());
                            assert!(futures::poll!(waiting.next()).is_pending());
                            panic!("the root future of round {round}");
                        }
                        io::Result::Ok(())
                    })
                }));
                match ended {
                    Ok(ended) => ended?,
                    Err(_) => assert_eq!(round % 3, 0, "only the rounds that panic do"),
                }
                // The echo task waits to read; the root's waiter went with its future.
                assert_eq!(runtime.stats().waiters, 1, "{:?}", runtime.stats());
            }
        }
        for ((runtime, client), echo) in runtimes.iter().zip(clients).zip(echoes) {
            let echoed = runtime.block_on(async move {
                client.shutdown(std::net::Shutdown::Write)?;
                echo.await.unwrap()
            })?;
            assert_eq!(echoed, 20 * 4);
        }
        io::Result::Ok(())
    })
    .unwrap();
}

/// Echoes everything until EOF; returns how many bytes.
async fn echo_all(server: TcpStream) -> io::Result<usize> {
    let mut buf = [0; 64];
    let mut echoed = 0;
    loop {
        match server.read(&mut buf).await? {
            0 => return Ok(echoed),
            n => {
                server.write_all(&buf[..n]).await?;
                echoed += n;
            }
        }
    }
}

/// In one OS poll: a task in a socket's slot panics when woken, while two futures of
/// another task wait in the same socket's area and a third task waits on another socket.
/// The panic stays in its task; everyone else is woken and runs.
#[test]
fn a_task_that_panics_in_a_sockets_slot_keeps_nobody_else_waiting() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (mut client, server) = std_pair().await?;
            let (mut other_client, other) = std_pair().await?;
            let server = Rc::new(server);
            let panicking = spawn({
                let server = Rc::clone(&server);
                async move {
                    let _ = server.readable().await;
                    panic!("woken, and gone");
                }
            });
            yield_now().await; // it holds the slot
            let in_area = spawn({
                let server = Rc::clone(&server);
                async move {
                    let mut waiting = FuturesUnordered::new();
                    waiting.push(server.readable());
                    waiting.push(server.readable());
                    while let Some(ready) = waiting.next().await {
                        ready?;
                    }
                    let mut buf = [0; 4];
                    server.read(&mut buf).await
                }
            });
            let elsewhere = spawn(async move {
                let mut buf = [0; 4];
                other.read(&mut buf).await
            });
            yield_now().await;
            assert_eq!(stats().waiters, 4, "{:?}", stats());
            client.write_all(b"x")?;
            other_client.write_all(b"yy")?;
            assert!(panicking.await.unwrap_err().is_panic());
            assert_eq!(timeout(HANG, in_area).await.expect("woken").unwrap()?, 1);
            assert_eq!(timeout(HANG, elsewhere).await.expect("woken").unwrap()?, 2);
            assert_no_waiters(stats());
            io::Result::Ok(())
        })
    })
    .unwrap();
}
