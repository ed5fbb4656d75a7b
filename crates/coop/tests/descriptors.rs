//! Nothing leaks at drop: a runtime's descriptors (its poll, its alarm, its inbox's
//! eventfd, its sockets) all go with it, whatever is pending. One test in this file, so
//! that no other test opens descriptors meanwhile.

// Sockets (and /proc) all through: Miri has neither.
#![cfg(not(miri))]

mod common;

use std::future::Future;
use std::sync::mpsc;
use std::task::{Poll, Waker};
use std::thread;

use common::{LIMIT, bounded};
use coop::Runtime;
use coop::net::TcpListener;

/// Fails rather than count nothing: with `/proc` unreadable, every comparison would
/// be 0 against 0.
fn open_descriptors() -> usize {
    let count = std::fs::read_dir("/proc/self/fd")
        .unwrap_or_else(|e| panic!("cannot list /proc/self/fd: {e}"))
        .count();
    assert!(
        count >= 3,
        "only {count} descriptors listed (stdin, stdout, stderr?)"
    );
    count
}

/// 100 runtimes, each dropped with a task parked on a socket and a wake from another
/// thread waiting in its inbox: the descriptor count comes back to where it was.
#[test]
fn dropped_runtimes_leave_no_descriptors() {
    bounded(LIMIT, || {
        let before = open_descriptors();
        for _ in 0..100 {
            let runtime = Runtime::new().unwrap();
            let (send, waker) = mpsc::channel::<Waker>();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                drop(coop::spawn(async move {
                    let _ = listener.accept().await;
                }));
                let task = coop::spawn(std::future::poll_fn(move |cx| {
                    send.send(cx.waker().clone()).unwrap();
                    Poll::<()>::Pending
                }));
                coop::yield_now().await;
                drop(task);
            });
            // Woken from another thread while the runtime is not running: the wake waits
            // in the inbox when the runtime is dropped.
            let waker = waker.recv().unwrap();
            thread::spawn(move || waker.wake()).join().unwrap();
            drop(runtime);
        }
        assert_eq!(open_descriptors(), before, "descriptors leaked");

        // A `Sleep` kept past its runtime holds what its docs say: the poll, the alarm's
        // timerfd and the inbox's eventfd; all three go with it.
        let runtime = Runtime::new().unwrap();
        let mut sleep = Box::pin(coop::time::sleep(std::time::Duration::from_secs(3600)));
        runtime.block_on(async {
            std::future::poll_fn(|cx| {
                assert!(sleep.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            // The runtime waits for a timer once: its alarm is made.
            coop::time::sleep(std::time::Duration::from_millis(1)).await;
        });
        drop(runtime);
        assert_eq!(open_descriptors(), before + 3, "what a kept Sleep holds");
        drop(sleep);
        assert_eq!(
            open_descriptors(),
            before,
            "descriptors leaked by a kept Sleep"
        );
    });
}
