//! A task's life: woken during the poll in which it completes, woken after its end,
//! cancelled, and what it owns dropped the moment it ends.

mod common;

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use common::{LIMIT, bounded, pair};
use coop::{JoinHandle, Runtime, spawn, yield_now};
use futures::StreamExt;

/// Sets its flag when dropped.
struct Guard(Rc<Cell<bool>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

/// The first trigger: the last await is a timeout of zero around a yield. The yield wakes
/// the task, then the timeout completes it, in the same poll.
#[test]
fn completing_in_the_poll_that_woke_it_via_a_zero_timeout() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    spawn(async move {
                        let elapsed = coop::time::timeout(Duration::ZERO, yield_now()).await;
                        assert!(elapsed.is_err(), "a zero timeout ends first");
                        i
                    })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                assert_eq!(task.await.unwrap(), i);
            }
            for _ in 0..10 {
                yield_now().await; // the runtime goes on
            }
        });
    });
}

/// The second trigger: a select in which one branch wakes the task (a yield) while the
/// other completes.
#[test]
fn completing_in_the_poll_that_woke_it_via_select() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..100)
                .map(|_| {
                    spawn(async {
                        let yielding = Box::pin(yield_now());
                        let done = futures::future::ready(7);
                        match futures::future::select(yielding, done).await {
                            futures::future::Either::Right((seven, _)) => seven,
                            futures::future::Either::Left(_) => unreachable!("a yield is pending"),
                        }
                    })
                })
                .collect();
            for task in tasks {
                assert_eq!(task.await.unwrap(), 7);
            }
        });
        assert_eq!(runtime.stats().tasks, 0);
        assert_eq!(runtime.stats().ready, 0, "no stale entry in the queue");
    });
}

/// The third trigger: the task wakes itself through a channel (its own receiver), then
/// returns.
#[test]
fn completing_in_the_poll_that_woke_it_via_a_channel() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    spawn(async move {
                        let (tx, mut rx) = futures::channel::mpsc::unbounded::<u32>();
                        let mut next = rx.next();
                        assert!(futures::poll!(&mut next).is_pending());
                        tx.unbounded_send(i).unwrap(); // wakes this very task
                        i
                    })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                assert_eq!(task.await.unwrap(), i as u32);
            }
        });
    });
}

/// A waker kept past its task's end wakes nothing, not even the task that reuses its
/// slot in the table.
#[test]
fn a_wake_after_the_end_does_nothing() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let kept: Rc<RefCell<Option<Waker>>> = Rc::default();
            let first = spawn({
                let kept = Rc::clone(&kept);
                std::future::poll_fn(move |cx| {
                    *kept.borrow_mut() = Some(cx.waker().clone());
                    Poll::Ready(())
                })
            });
            first.await.unwrap();
            let polls = Rc::new(Cell::new(0));
            let second = spawn({
                let polls = Rc::clone(&polls);
                std::future::poll_fn(move |_| {
                    polls.set(polls.get() + 1);
                    Poll::<()>::Pending
                })
            });
            yield_now().await;
            assert_eq!(polls.get(), 1);
            let stale = kept.borrow_mut().take().unwrap();
            for _ in 0..10 {
                stale.wake_by_ref();
            }
            stale.wake();
            for _ in 0..5 {
                yield_now().await;
            }
            assert_eq!(
                polls.get(),
                1,
                "the stale wakes reached the slot's new task"
            );
            second.abort();
        });
    });
}

/// A socket keeps the task that parked on it by key: when it turns ready after the task
/// has ended, nothing is polled.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_socket_does_not_wake_a_task_that_ended() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (client, server) = pair().await?;
            let server = Rc::new(server);
            // Parks on the socket (the `poll_*` waiter), then ends at once.
            let parker = spawn({
                let server = Rc::clone(&server);
                std::future::poll_fn(move |cx| {
                    assert!(server.poll_read_ready(cx).is_pending());
                    Poll::Ready(())
                })
            });
            parker.await.unwrap();
            // And a future's waiter, which ends by the other branch of a select.
            let selecting = spawn({
                let server = Rc::clone(&server);
                async move {
                    let readable = Box::pin(server.readable());
                    let now = futures::future::ready(());
                    futures::future::select(readable, now).await;
                }
            });
            selecting.await.unwrap();
            client.write_all(b"late").await?;
            let mut buf = [0; 4];
            let n = server.read(&mut buf).await?;
            assert_eq!(&buf[..n], b"late");
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// The future is dropped the moment the task completes (its sockets and guards with it),
/// whoever still holds the `JoinHandle`.
#[test]
fn the_future_is_dropped_when_the_task_completes() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let dropped = Rc::new(Cell::new(false));
            let task = spawn({
                let guard = Guard(Rc::clone(&dropped));
                async move {
                    yield_now().await;
                    let _guard = &guard;
                    5
                }
            });
            while !task.is_finished() {
                yield_now().await;
            }
            assert!(dropped.get(), "finished, but its future is still alive");
            assert_eq!(task.await.unwrap(), 5);
        });
    });
}

/// A detached task that reads from a stream and returns it: the stream closes when the
/// task ends (its output goes with it), and the peer sees EOF while the runtime runs on.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_detached_task_that_returns_its_stream_closes_it() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (client, server) = pair().await?;
            drop(spawn(async move {
                let mut buf = [0; 5];
                let n = server.read(&mut buf).await?;
                assert_eq!(&buf[..n], b"hello");
                io::Result::Ok(server)
            }));
            // It parks on its socket first (the case where a socket kept its task).
            while coop::stats().unwrap().waiters == 0 {
                yield_now().await;
            }
            client.write_all(b"hello").await?;
            let mut buf = [0; 8];
            assert_eq!(client.read(&mut buf).await?, 0, "the server side closed");
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// `abort` drops the future (the socket it holds closes: the peer sees EOF), and the
/// handle says it was cancelled.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn abort_cancels_a_parked_task_and_closes_what_it_holds() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        runtime.block_on(async {
            let (client, server) = pair().await?;
            let dropped = Rc::new(Cell::new(false));
            let reader = spawn({
                let guard = Guard(Rc::clone(&dropped));
                async move {
                    let _guard = guard;
                    let mut buf = [0; 8];
                    server.read(&mut buf).await
                }
            });
            yield_now().await;
            assert!(!reader.is_finished());
            reader.abort();
            let outcome = reader.await;
            assert!(outcome.unwrap_err().is_cancelled());
            assert!(dropped.get());
            let mut buf = [0; 8];
            assert_eq!(
                client.read(&mut buf).await?,
                0,
                "the aborted task's socket closed"
            );
            io::Result::Ok(())
        })?;
        assert_eq!(runtime.stats().tasks, 0);
        assert_eq!(runtime.stats().waiters, 0);
        io::Result::Ok(())
    })
    .unwrap();
}

/// Aborting a task that has finished changes nothing; aborting twice is harmless.
#[test]
fn abort_after_the_end_keeps_the_output() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let task = spawn(async { 3 });
            while !task.is_finished() {
                yield_now().await;
            }
            task.abort();
            task.abort();
            assert_eq!(task.await.unwrap(), 3);
        });
    });
}

/// A task that aborts itself runs on to its next `.await`, and no further.
#[test]
fn a_task_that_aborts_itself_stops_at_its_next_await() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let own: Rc<RefCell<Option<JoinHandle<()>>>> = Rc::default();
            let step = Rc::new(Cell::new(0));
            let handle = spawn({
                let own = Rc::clone(&own);
                let step = Rc::clone(&step);
                async move {
                    yield_now().await;
                    own.borrow().as_ref().unwrap().abort();
                    step.set(1);
                    yield_now().await;
                    step.set(2);
                }
            });
            *own.borrow_mut() = Some(handle);
            for _ in 0..10 {
                yield_now().await;
            }
            assert_eq!(step.get(), 1);
            let handle = own.borrow_mut().take().unwrap();
            assert!(handle.await.unwrap_err().is_cancelled());
        });
    });
}

/// Dropping a handle detaches: the task runs to its end.
#[test]
fn a_dropped_handle_detaches() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let done = Rc::new(Cell::new(false));
            drop(spawn({
                let done = Rc::clone(&done);
                async move {
                    yield_now().await;
                    done.set(true);
                }
            }));
            while !done.get() {
                yield_now().await;
            }
        });
    });
}

/// A future that counts how many waker clones it has given away, polled with a waker of
/// its own (as a combinator would) rather than its task's.
struct WithOwnWaker<F> {
    future: Pin<Box<F>>,
    waker: Waker,
}

impl<F: Future> Future for WithOwnWaker<F> {
    type Output = Poll<F::Output>;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Poll<F::Output>> {
        let waker = self.waker.clone();
        Poll::Ready(self.future.as_mut().poll(&mut Context::from_waker(&waker)))
    }
}

/// A distinct waker each, so that nothing can merge them.
struct Counted;

impl std::task::Wake for Counted {
    fn wake(self: std::sync::Arc<Self>) {}
}

/// Readiness futures dropped before they are woken take their waiters back: 1,000 of
/// them, each with a waker of its own, leave nothing in the socket.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn dropped_readiness_futures_leave_no_waiters() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        runtime.block_on(async {
            let (_client, server) = pair().await?;
            let wakers: Vec<std::sync::Arc<Counted>> =
                (0..1000).map(|_| std::sync::Arc::new(Counted)).collect();
            for waker in &wakers {
                let polled = WithOwnWaker {
                    future: Box::pin(server.readable()),
                    waker: Waker::from(std::sync::Arc::clone(waker)),
                }
                .await;
                assert!(polled.is_pending());
            }
            assert!(
                wakers.iter().all(|w| std::sync::Arc::strong_count(w) == 1),
                "the socket keeps wakers of dropped futures"
            );
            assert_eq!(coop::stats().unwrap().waiters, 0);
            // And the same for timers.
            for waker in &wakers {
                let polled = WithOwnWaker {
                    future: Box::pin(coop::time::sleep(Duration::from_secs(3600))),
                    waker: Waker::from(std::sync::Arc::clone(waker)),
                }
                .await;
                assert!(polled.is_pending());
            }
            assert!(wakers.iter().all(|w| std::sync::Arc::strong_count(w) == 1));
            assert_eq!(coop::stats().unwrap().timers, 0);
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// Any number of futures may wait on one socket at once, in one task or in several, and
/// each is woken; one of them dropped does not take the others' places.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn several_waiters_on_one_socket_are_all_woken() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (client, server) = pair().await?;
            let server = Rc::new(server);
            let woken = Rc::new(Cell::new(0));
            let waiters: Vec<_> = (0..3)
                .map(|_| {
                    let server = Rc::clone(&server);
                    let woken = Rc::clone(&woken);
                    spawn(async move {
                        // In one task, two readiness futures: one dropped by a timeout.
                        let one = coop::time::timeout(Duration::ZERO, server.readable());
                        let two = server.readable();
                        let (_, two) = futures::join!(one, two);
                        two.unwrap();
                        woken.set(woken.get() + 1);
                    })
                })
                .collect();
            for _ in 0..5 {
                yield_now().await;
            }
            assert_eq!(woken.get(), 0);
            client.write_all(b"x").await?;
            for waiter in waiters {
                waiter.await.unwrap();
            }
            assert_eq!(woken.get(), 3);
            io::Result::Ok(())
        })
    })
    .unwrap();
}
