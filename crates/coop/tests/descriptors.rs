//! Nothing leaks at drop: a runtime's descriptors (its poll, its alarm, its inbox's
//! eventfd, its sockets) all go with it, whatever is pending. One test in this file, so
//! that no other test opens descriptors meanwhile.

// Sockets (and /proc) all through: Miri has neither.
#![cfg(not(miri))]

mod common;

use std::sync::mpsc;
use std::task::{Poll, Waker};
use std::thread;

use common::{LIMIT, bounded};
use coop::Runtime;
use coop::net::TcpListener;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
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
    });
}
