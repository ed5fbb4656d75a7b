//! Code the scheduler calls that calls the scheduler back: destructors that spawn or
//! wake, wakers woken while the runtime is in the middle of something, trace hooks that
//! spawn or clear themselves.

mod common;

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

use common::{LIMIT, bounded};
use coop::net::{TcpListener, TcpStream};
use coop::{Runtime, spawn, yield_now};

/// Spawns a task, and wakes a waker, when dropped.
struct Spawner {
    spawned: Rc<Cell<u32>>,
    wake: Option<Waker>,
}

impl Drop for Spawner {
    fn drop(&mut self) {
        let spawned = Rc::clone(&self.spawned);
        drop(spawn(async move { spawned.set(spawned.get() + 1) }));
        if let Some(waker) = self.wake.take() {
            waker.wake();
        }
    }
}

/// Destructors that spawn and wake while the runtime is dropped: harmless, and what they
/// spawn is cancelled, not run.
#[test]
fn destructors_that_spawn_or_wake_while_the_runtime_is_dropped() {
    bounded(LIMIT, || {
        let spawned = Rc::new(Cell::new(0));
        let runtime = Runtime::new().unwrap();
        runtime.block_on(async {
            let other = spawn(std::future::pending::<()>());
            let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
            for _ in 0..10 {
                let spawner = Spawner {
                    spawned: Rc::clone(&spawned),
                    wake: None,
                };
                let waker = Rc::clone(&waker);
                drop(spawn(async move {
                    let mut spawner = spawner;
                    std::future::poll_fn(|cx| {
                        spawner.wake = Some(cx.waker().clone());
                        *waker.borrow_mut() = Some(cx.waker().clone());
                        Poll::<()>::Pending
                    })
                    .await;
                }));
            }
            yield_now().await;
            drop(other);
        });
        drop(runtime);
        assert_eq!(spawned.get(), 0, "a task spawned during the drop ran");
    });
}

/// Destructors that spawn and wake while a finished task's future is dropped (inside
/// the run loop): what they spawn runs.
#[test]
fn destructors_that_spawn_or_wake_when_a_task_ends() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let spawned = Rc::new(Cell::new(0));
            let own: Rc<RefCell<Option<Waker>>> = Rc::default();
            let task = spawn({
                let spawned = Rc::clone(&spawned);
                let own = Rc::clone(&own);
                async move {
                    let mut spawner = Spawner {
                        spawned,
                        wake: None,
                    };
                    std::future::poll_fn(|cx| {
                        // Its own waker, woken from its own destructor.
                        spawner.wake = Some(cx.waker().clone());
                        *own.borrow_mut() = Some(cx.waker().clone());
                        Poll::Ready(())
                    })
                    .await;
                    drop(spawner);
                    4
                }
            });
            assert_eq!(task.await.unwrap(), 4);
            while spawned.get() == 0 {
                yield_now().await;
            }
            own.borrow_mut().take().unwrap().wake(); // long after the end
            yield_now().await;
        });
    });
}

/// A waker that binds a socket and spawns a task when woken: woken by the reactor in the
/// middle of dispatching events, it may do both.
struct Busy {
    inner: Waker,
    did: Arc<std::sync::atomic::AtomicBool>,
}

impl Wake for Busy {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind inside a wake");
        drop(spawn(async move { drop(listener) }));
        self.did.store(true, std::sync::atomic::Ordering::SeqCst);
        self.inner.wake_by_ref();
    }
}

#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_waker_woken_by_the_reactor_may_register_sockets_and_spawn() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let client = TcpStream::connect(listener.local_addr()?).await?;
            let (server, _) = listener.accept().await?;
            let did = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let mut parked = false;
            let reader = std::future::poll_fn(|cx| {
                if parked {
                    return Poll::Ready(());
                }
                let busy = Waker::from(Arc::new(Busy {
                    inner: cx.waker().clone(),
                    did: Arc::clone(&did),
                }));
                let mut busy_cx = std::task::Context::from_waker(&busy);
                assert!(server.poll_read_ready(&mut busy_cx).is_pending());
                parked = true;
                Poll::Pending
            });
            let (_, written) = futures::join!(reader, client.write_all(b"x"));
            written?;
            assert!(did.load(std::sync::atomic::Ordering::SeqCst));
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// A task that its socket woke runs straight from the OS poll's batch, while the reactor
/// is going through it: in that poll it registers sockets and drops them, its own
/// included, and the batch goes on.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_task_woken_by_its_socket_may_register_and_drop_sockets() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (client, server) = common::pair().await?;
            let (other_client, other_server) = common::pair().await?;
            let task = spawn(async move {
                let mut buf = [0; 8];
                let n = server.read(&mut buf).await?;
                // All in the poll that the read's wake began.
                let listeners: Vec<TcpListener> = (0..50)
                    .map(|_| TcpListener::bind("127.0.0.1:0"))
                    .collect::<io::Result<_>>()?;
                drop(listeners);
                drop(server);
                io::Result::Ok(n)
            });
            let other = spawn(async move {
                let mut buf = [0; 8];
                let n = other_server.read(&mut buf).await?;
                other_server.write_all(&buf[..n]).await?;
                io::Result::Ok(())
            });
            yield_now().await;
            client.write_all(b"x").await?;
            other_client.write_all(b"y").await?;
            assert_eq!(task.await.unwrap()?, 1);
            other.await.unwrap()?;
            let mut buf = [0; 8];
            assert_eq!(client.read(&mut buf).await?, 0, "the dropped socket closed");
            assert_eq!(other_client.read(&mut buf).await?, 1);
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// A trace hook that spawns a task and then clears itself: both work, and the events the
/// hook causes are not reported to it.
#[test]
fn a_trace_hook_that_spawns_and_clears_itself() {
    bounded(LIMIT, || {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let ran = Rc::new(Cell::new(false));
        coop::block_on({
            let seen = Rc::clone(&seen);
            let ran = Rc::clone(&ran);
            async move {
                coop::trace::set_hook({
                    let seen = Rc::clone(&seen);
                    let ran = Rc::clone(&ran);
                    move |event| {
                        seen.borrow_mut().push(event.to_string());
                        let ran = Rc::clone(&ran);
                        drop(spawn(async move { ran.set(true) }));
                        coop::trace::clear_hook();
                    }
                });
                spawn(async {}).await.unwrap();
                while !ran.get() {
                    yield_now().await;
                }
            }
        });
        assert_eq!(
            *seen.borrow(),
            ["spawn task 1"],
            "one event, then the hook is gone"
        );
        assert!(!coop::trace::enabled());
    });
}

/// Outside a runtime, `time::now` is the clock; inside, the time of the last OS poll.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn now_outside_a_runtime_moves() {
    let first = coop::time::now();
    while Instant::now() <= first {}
    assert!(
        coop::time::now() > first,
        "now() stood still outside a runtime"
    );
    bounded(LIMIT, move || {
        coop::block_on(async move {
            let before = Instant::now();
            coop::time::sleep(Duration::from_millis(1)).await;
            assert!(coop::time::now() >= before);
        });
    });
}

/// A runtime dropped inside another runtime's task drops its own tasks (whose
/// destructors may spawn: onto the dropped runtime, not the running one), and leaves the
/// running one as it was.
#[test]
fn a_runtime_dropped_inside_a_task() {
    bounded(LIMIT, || {
        let spawned = Rc::new(Cell::new(0));
        let inner = Runtime::new().unwrap();
        inner.block_on({
            let spawned = Rc::clone(&spawned);
            async move {
                let spawner = Spawner {
                    spawned,
                    wake: None,
                };
                drop(spawn(async move {
                    let _spawner = spawner;
                    std::future::pending::<()>().await;
                }));
            }
        });
        coop::block_on(async move {
            let before = coop::stats().unwrap().tasks;
            drop(inner);
            assert_eq!(coop::stats().unwrap().tasks, before);
            assert_eq!(spawn(async { 1 }).await.unwrap(), 1);
        });
        assert_eq!(spawned.get(), 0);
    });
}
