//! `spawn_blocking` and the host-name lookups built on it: blocking work goes to the
//! pool, the runtime's thread goes on, panics and aborts stay with their handle, and the
//! pool holds at most `MAX_BLOCKING_THREADS` threads, the rest waiting their turn.

#![cfg(not(miri))]

mod common;

use std::io;
use std::sync::mpsc;
use std::time::Duration;

use common::{LIMIT, bounded};
use coop::net::{TcpListener, TcpStream};
use coop::{JoinError, MAX_BLOCKING_THREADS, spawn, spawn_blocking};

/// The closure blocks until a task of the runtime releases it: it can finish only if it
/// runs on another thread while the runtime's goes on.
#[test]
fn blocking_work_runs_off_the_runtimes_thread() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let runtime_thread = std::thread::current().id();
            let (release, released) = mpsc::channel::<u32>();
            let blocked = spawn_blocking(move || {
                let value = released.recv().unwrap();
                (value * 2, std::thread::current().id())
            });
            spawn(async move {
                coop::yield_now().await;
                release.send(21).unwrap();
            })
            .await
            .unwrap();
            let (value, thread) = blocked.await.unwrap();
            assert_eq!(value, 42);
            assert_ne!(thread, runtime_thread);
        });
    });
}

#[test]
fn a_panic_in_blocking_work_is_its_handles_and_the_pool_goes_on() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let failed = spawn_blocking(|| -> u8 { panic!("blocking boom") }).await;
            let error = failed.unwrap_err();
            assert!(error.is_panic());
            assert_eq!(error.panic_message(), Some("blocking boom"));
            // Many more than the pool has threads: every one is done, in any order.
            let handles: Vec<_> = (0..100u32).map(|i| spawn_blocking(move || i)).collect();
            let mut sum = 0;
            for handle in handles {
                sum += handle.await.unwrap();
            }
            assert_eq!(sum, (0..100).sum());
        });
    });
}

/// Aborted, the handle says cancelled at once; the closure still runs to its end on its
/// thread (nothing can stop a thread from outside).
#[test]
fn an_aborted_blocking_handle_is_cancelled_and_its_work_still_ends() {
    bounded(LIMIT, || {
        let (finished, finish_seen) = mpsc::channel();
        coop::block_on(async {
            let (release, released) = mpsc::channel::<()>();
            let handle = spawn_blocking(move || {
                released.recv().unwrap();
                finished.send(()).unwrap();
            });
            handle.abort();
            assert!(matches!(handle.await, Err(JoinError::Cancelled)));
            release.send(()).unwrap();
        });
        finish_seen
            .recv_timeout(LIMIT)
            .expect("the aborted work ran to its end");
    });
}

/// With every pool thread busy, more work waits (and is not run on the runtime's
/// thread); it starts as soon as a thread is free.
#[test]
fn work_beyond_the_pools_threads_waits_for_one() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (started, starts) = mpsc::channel::<usize>();
            let mut releases = Vec::new();
            let mut holders = Vec::new();
            for i in 0..MAX_BLOCKING_THREADS {
                let (release, released) = mpsc::channel::<()>();
                releases.push(release);
                let started = started.clone();
                holders.push(spawn_blocking(move || {
                    started.send(i).unwrap();
                    released.recv().unwrap();
                }));
            }
            // Other tests of this file may hold a pool thread for a moment: all the
            // holders start once those are done.
            for _ in 0..MAX_BLOCKING_THREADS {
                starts.recv_timeout(LIMIT).expect("a holder started");
            }
            let extra = spawn_blocking({
                let started = started.clone();
                move || started.send(usize::MAX).unwrap()
            });
            // It cannot start while every thread is held.
            assert!(
                starts.recv_timeout(Duration::from_millis(200)).is_err(),
                "more than {MAX_BLOCKING_THREADS} blocking threads ran at once"
            );
            releases.remove(0).send(()).unwrap();
            assert_eq!(starts.recv_timeout(LIMIT), Ok(usize::MAX));
            extra.await.unwrap();
            for release in releases {
                release.send(()).unwrap();
            }
            for holder in holders {
                holder.await.unwrap();
            }
        });
    });
}

/// `connect` takes a host name (looked up on the pool), and a name that cannot resolve
/// is an error naming it. (`no..such` has an empty label: the resolver refuses it
/// without asking any name server.)
#[test]
fn connect_resolves_names_and_names_the_one_that_does_not_resolve() -> io::Result<()> {
    bounded(LIMIT, || {
        coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let port = listener.local_addr()?.port();
            let _by_name = TcpStream::connect(format!("localhost:{port}")).await?;
            let _by_pair = TcpStream::connect(("localhost", port)).await?;
            let error = TcpStream::connect(("no..such", port)).await.unwrap_err();
            assert!(
                error.to_string().starts_with("cannot resolve no..such: "),
                "{error}"
            );
            let error = TcpStream::connect("localhost").await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
            Ok(())
        })
    })
}
