//! A panic stays in its task: the runtime and every other task go on, and the task's
//! handle reports it.

mod common;

use std::cell::Cell;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use common::{LIMIT, bounded};
use coop::net::{TcpListener, TcpStream};
use coop::{Runtime, Server, spawn, yield_now};

struct Guard(Rc<Cell<bool>>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.set(true);
    }
}

#[test]
fn a_panic_stays_in_its_task() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        let steps = runtime.block_on(async {
            let steps = Rc::new(Cell::new(0));
            let steady = spawn({
                let steps = Rc::clone(&steps);
                async move {
                    for _ in 0..10 {
                        steps.set(steps.get() + 1);
                        yield_now().await;
                    }
                }
            });
            let dropped = Rc::new(Cell::new(false));
            let doomed = spawn({
                let guard = Guard(Rc::clone(&dropped));
                async move {
                    let _guard = guard;
                    yield_now().await;
                    panic!("boom");
                }
            });
            let error = doomed.await.unwrap_err();
            assert!(error.is_panic());
            assert_eq!(error.panic_message(), Some("boom"));
            assert_eq!(error.to_string(), "the task panicked: boom");
            assert!(dropped.get(), "the panicked task's future is dropped");
            steady.await.unwrap();
            steps.get()
        });
        assert_eq!(steps, 10);
        assert_eq!(runtime.stats().tasks, 0);
    });
}

/// Many tasks panic in one round; the others in the same round still run.
#[test]
fn panics_in_one_round_do_not_skip_the_rest_of_it() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let ran = Rc::new(Cell::new(0));
            let tasks: Vec<_> = (0..100)
                .map(|i| {
                    let ran = Rc::clone(&ran);
                    spawn(async move {
                        ran.set(ran.get() + 1);
                        if i % 2 == 0 {
                            panic!("task {i}");
                        }
                        i
                    })
                })
                .collect();
            for (i, task) in tasks.into_iter().enumerate() {
                match task.await {
                    Ok(n) => assert_eq!(n, i),
                    Err(e) => assert_eq!(e.panic_message(), Some(format!("task {i}").as_str())),
                }
            }
            assert_eq!(ran.get(), 100);
        });
    });
}

/// A destructor that panics while a finished task's future is dropped: reported as the
/// task's panic, and the runtime goes on.
#[test]
fn a_panicking_destructor_is_the_tasks_panic() {
    struct Bomb;
    impl Drop for Bomb {
        fn drop(&mut self) {
            panic!("in drop");
        }
    }
    bounded(LIMIT, || {
        coop::block_on(async {
            let task = spawn(async {
                let _bomb = Bomb;
                yield_now().await;
                1
            });
            let error = task.await.unwrap_err();
            assert_eq!(error.panic_message(), Some("in drop"));
            assert_eq!(spawn(async { 2 }).await.unwrap(), 2);
        });
    });
}

/// Panics when dropped: the output of a task nobody awaits any more.
struct PanicsWhenDropped;

impl Drop for PanicsWhenDropped {
    fn drop(&mut self) {
        panic!("an output dropped");
    }
}

/// A detached task returns a value whose destructor panics: the value is dropped with
/// the task, by the run loop, and the panic stays there. (Found by a review: it unwound
/// out of `block_on`.)
#[test]
fn a_detached_tasks_output_that_panics_when_dropped_stays_in_the_run_loop() {
    bounded(LIMIT, || {
        coop::block_on(async {
            drop(spawn(async { PanicsWhenDropped }));
            yield_now().await;
            yield_now().await;
            assert_eq!(spawn(async { 2 }).await.unwrap(), 2);
        });
    });
}

/// The same, from the OS poll's batch: the tasks woken by the rest of the batch still
/// run. (Found by a review: the panic left the batch half-walked, and the task woken by
/// the next event never ran.)
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_detached_tasks_output_that_panics_when_dropped_loses_no_wake() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (a_client, a_server) = common::pair().await?;
            let (b_client, b_server) = common::pair().await?;
            drop(spawn(async move {
                let mut buf = [0; 8];
                let _ = a_server.read(&mut buf).await;
                PanicsWhenDropped
            }));
            let b = spawn(async move {
                let mut buf = [0; 8];
                b_server.read(&mut buf).await
            });
            // Let both park, then wake both in one batch.
            yield_now().await;
            a_client.try_write(b"a")?;
            b_client.try_write(b"b")?;
            assert_eq!(b.await.unwrap()?, 1);
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// `block_on`'s own future is the caller's: its panic unwinds out of `block_on`, and the
/// runtime stays usable.
#[test]
fn a_panic_in_the_main_future_unwinds_out_of_block_on() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        // The handle is the output, on purpose: awaited by a later `block_on`.
        #[allow(clippy::async_yields_async)]
        let survivor = runtime.block_on(async {
            spawn(async {
                yield_now().await;
                9
            })
        });
        let caught = catch_unwind(AssertUnwindSafe(|| {
            runtime.block_on(async {
                yield_now().await;
                panic!("main");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(runtime.block_on(survivor).unwrap(), 9);
    });
}

/// A `Server` handler that panics ends only its own connection: the server goes on
/// accepting and serving, and counts the connection as closed.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_panicking_handler_does_not_stop_the_server() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let server = Server::new(TcpListener::bind("127.0.0.1:0")?).max_connections(1);
            let addr = server.local_addr()?;
            let handle = server.handle();
            drop(spawn(server.serve(|stream, _| async move {
                let mut buf = [0; 16];
                let n = stream.read(&mut buf).await.unwrap_or(0);
                if &buf[..n] == b"panic" {
                    panic!("asked to");
                }
                let _ = stream.write_all(&buf[..n]).await;
            })));
            let doomed = TcpStream::connect(addr).await?;
            doomed.write_all(b"panic").await?;
            let mut buf = [0; 16];
            assert_eq!(doomed.read(&mut buf).await?, 0, "its connection is closed");
            // The limit is 1: the next client is served only if the panicked
            // connection was counted out.
            let next = TcpStream::connect(addr).await?;
            next.write_all(b"hello").await?;
            let n = next.read(&mut buf).await?;
            assert_eq!(&buf[..n], b"hello");
            assert_eq!(handle.total_connections(), 2);
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// Tasks that their sockets woke run straight from the OS poll's batch: half of them
/// panic there, and the other half, in the same batch or the next, still run and answer.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn panics_of_tasks_woken_by_one_os_poll_do_not_skip_the_others() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let mut clients = Vec::new();
            let mut tasks = Vec::new();
            for i in 0..20 {
                let (client, server) = common::pair().await?;
                tasks.push(spawn(async move {
                    let mut buf = [0; 8];
                    let n = server.read(&mut buf).await?;
                    if i % 2 == 0 {
                        panic!("task {i}");
                    }
                    server.write_all(&buf[..n]).await?;
                    io::Result::Ok(())
                }));
                clients.push(client);
            }
            // Let every task park on its socket, then wake them all at once.
            yield_now().await;
            for client in &clients {
                client.write_all(b"x").await?;
            }
            for (i, (task, client)) in tasks.into_iter().zip(&clients).enumerate() {
                let mut buf = [0; 8];
                match task.await {
                    Err(e) => {
                        assert_eq!(i % 2, 0, "task {i} panicked");
                        assert_eq!(e.panic_message(), Some(format!("task {i}").as_str()));
                        assert_eq!(client.read(&mut buf).await?, 0, "its socket closed");
                    }
                    Ok(answered) => {
                        answered?;
                        assert_eq!(i % 2, 1, "task {i} did not panic");
                        assert_eq!(client.read(&mut buf).await?, 1, "task {i} answered");
                    }
                }
            }
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// A waker that panics when woken: someone else's bug.
struct PanickingWaker;

impl std::task::Wake for PanickingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        panic!("a waker that panics");
    }
}

/// A foreign waker the run loop wakes (from a timer, from a socket) and that panics does
/// not unwind out of `block_on`: the run loop, and every task, go on. (Found by a review
/// that tried to break the library: it unwound out of `block_on`.)
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_panicking_waker_stays_out_of_the_run_loop() {
    use std::future::Future;
    use std::io::Write;
    use std::task::{Context, Waker};
    use std::time::Duration;

    bounded(LIMIT, || {
        let runtime = Runtime::new()?;
        runtime.block_on(async {
            let panicking = Waker::from(std::sync::Arc::new(PanickingWaker));
            // On a timer.
            let mut soon = Box::pin(coop::time::sleep(Duration::from_millis(1)));
            let _ = soon.as_mut().poll(&mut Context::from_waker(&panicking));
            // On a socket.
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let stream = Rc::new(TcpStream::connect(listener.local_addr()?).await?);
            let (mut peer, _) = listener.accept()?;
            let mut readable = Box::pin(stream.readable());
            let _ = readable.as_mut().poll(&mut Context::from_waker(&panicking));
            let stream = Rc::clone(&stream);
            peer.write_all(b"x")?;
            // Both fire while these run; both tasks finish.
            let later = spawn(async {
                coop::time::sleep(Duration::from_millis(20)).await;
                2
            });
            let reader = spawn(async move {
                let mut byte = [0; 1];
                stream.read(&mut byte).await
            });
            assert_eq!(later.await.unwrap(), 2);
            assert_eq!(reader.await.unwrap()?, 1);
            drop((soon, readable));
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// A trace hook that panics is removed, wherever the scheduler called it: the task being
/// spawned still runs, the task being run is not blamed, and a wake reported from the OS
/// poll still gets its task going (wakes from other threads included).
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_panicking_trace_hook_is_removed_and_the_scheduler_goes_on() {
    use coop::trace::Event;
    use std::io::Write;

    bounded(LIMIT, || {
        coop::block_on(async {
            // On spawn.
            coop::trace::set_hook(|event| {
                if matches!(event, Event::Spawn { .. }) {
                    panic!("a hook that panics on spawn");
                }
            });
            let spawned = spawn(async { 1 });
            assert!(!coop::trace::enabled(), "the hook is removed");
            assert_eq!(spawned.await.unwrap(), 1);

            // On run: the task is not blamed.
            let ran = spawn(async { 42 });
            coop::trace::set_hook(|event| {
                if matches!(event, Event::Run { .. }) {
                    panic!("a hook that panics on run");
                }
            });
            assert_eq!(ran.await.unwrap(), 42);

            // On a wake from the OS poll, with a wake from another thread in the same
            // poll: both tasks go on.
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let stream = TcpStream::connect(listener.local_addr()?).await?;
            let (mut peer, _) = listener.accept()?;
            let reader = spawn(async move {
                let mut byte = [0; 1];
                stream.read(&mut byte).await
            });
            let (tx, rx) = std::sync::mpsc::channel::<std::task::Waker>();
            let waiting = spawn(async move {
                let mut sent = false;
                std::future::poll_fn(|cx| {
                    if sent {
                        return std::task::Poll::Ready(());
                    }
                    sent = true;
                    tx.send(cx.waker().clone()).unwrap();
                    std::task::Poll::Pending
                })
                .await;
            });
            yield_now().await;
            yield_now().await;
            coop::trace::set_hook(|event| {
                if matches!(event, Event::Wake { .. }) {
                    panic!("a hook that panics on wake");
                }
            });
            let waker = rx.recv().unwrap();
            std::thread::spawn(move || waker.wake()).join().unwrap();
            peer.write_all(b"x")?;
            assert_eq!(reader.await.unwrap()?, 1);
            waiting.await.unwrap();
            assert!(!coop::trace::enabled());
            io::Result::Ok(())
        })
    })
    .unwrap();
}
