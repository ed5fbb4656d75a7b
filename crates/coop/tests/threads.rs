//! One runtime per thread: `Remote` (spawn and stop from another thread), `threads::Builder`,
//! the `SO_REUSEPORT` binds and `SharedLimit`, at their edges: a runtime that is gone,
//! panics on the far side, cancellation, several waiters, a limit raced by two threads.

mod common;

use std::future::Future;
use std::io::{self, Read, Write};
use std::net::TcpStream as StdStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use common::{LIMIT, bounded};
use coop::net::{TcpListener, bind_reuse_port, bind_udp_reuse_port};
use coop::time::timeout;
use coop::{JoinError, Runtime, Server, SharedLimit, spawn, stop_requested};

#[test]
fn a_remote_spawn_runs_on_the_runtimes_thread_and_its_output_comes_back() {
    bounded(LIMIT, || {
        let (remote_tx, remote_rx) = std::sync::mpsc::channel();
        let server = thread::spawn(move || {
            let runtime = Runtime::new().unwrap();
            remote_tx.send(runtime.remote()).unwrap();
            runtime.block_on(stop_requested());
            thread::current().id()
        });
        let remote = remote_rx.recv().unwrap();
        // Awaited in another runtime, on this thread: the reply wakes it across threads.
        let (ran_on, not_send) = coop::block_on(remote.spawn(|| async {
            let local = std::rc::Rc::new(5); // the future need not be Send
            coop::yield_now().await;
            (thread::current().id(), *local)
        }))
        .unwrap();
        remote.stop();
        let server_id = server.join().unwrap();
        assert_eq!(ran_on, server_id);
        assert_ne!(ran_on, thread::current().id());
        assert_eq!(not_send, 5);
    });
}

#[test]
fn a_panic_on_the_far_side_is_the_tasks_and_the_runtime_goes_on() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        let remote = runtime.remote();
        let in_make = remote.spawn(|| -> std::future::Ready<()> { panic!("in make") });
        let in_future = remote.spawn(|| async { panic!("in the future") });
        let fine = remote.spawn(|| async { "fine" });
        let (a, b, c) = runtime.block_on(async { (in_make.await, in_future.await, fine.await) });
        assert_eq!(a.unwrap_err().panic_message(), Some("in make"));
        assert_eq!(b.unwrap_err().panic_message(), Some("in the future"));
        assert_eq!(c.unwrap(), "fine");
        assert_eq!(runtime.stats().tasks, 0, "both task layers ended");
    });
}

#[test]
fn a_runtime_that_is_gone_cancels_what_was_asked_of_it() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        let remote = runtime.remote();
        // Run to its end.
        let queued = remote.spawn(|| async { 1 });
        // Started, and waiting when the runtime goes.
        let started = remote.spawn(std::future::pending::<u8>);
        // A job queued last runs last (jobs, then their tasks, go in order): once it is
        // done, so are the two before it, as far as they can go.
        let marker = remote.spawn(|| async {});
        runtime.block_on(marker).unwrap();
        let (queued_too, queued_rx) = std::sync::mpsc::channel();
        let late = remote.spawn(move || {
            queued_too.send(()).unwrap();
            async {}
        });
        drop(runtime);
        // After the runtime: nothing to reach.
        let after = remote.spawn(|| async { 2 });
        remote.stop(); // does nothing, and does not fail
        coop::block_on(async {
            assert_eq!(queued.await.unwrap(), 1);
            assert!(matches!(started.await, Err(JoinError::Cancelled)));
            assert!(matches!(late.await, Err(JoinError::Cancelled)));
            assert!(matches!(after.await, Err(JoinError::Cancelled)));
        });
        assert!(
            queued_rx.try_recv().is_err(),
            "a job the runtime never ran was called"
        );
    });
}

/// A socket or a `Sleep` kept past its runtime keeps the runtime's internals alive; the
/// runtime is gone all the same, and a spawn asked of it then is cancelled at once.
#[test]
fn a_runtime_is_gone_whatever_of_it_is_still_held() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        let remote = runtime.remote();
        let (listener, sleep) = runtime.block_on(async {
            let mut sleep = Box::pin(coop::time::sleep(Duration::from_secs(3600)));
            // Polled once: registered in the runtime's timers.
            let _ = futures_poll_once(&mut sleep).await;
            (TcpListener::bind("127.0.0.1:0").unwrap(), sleep)
        });
        drop(runtime);
        let handles: Vec<_> = (0..3)
            .map(|i| remote.spawn(move || async move { i }))
            .collect();
        coop::block_on(async {
            for handle in handles {
                assert!(matches!(handle.await, Err(JoinError::Cancelled)));
            }
        });
        assert!(format!("{remote:?}").contains("alive: false"), "{remote:?}");
        drop(listener);
        drop(sleep);
    });
}

/// Polls `future` once, whatever it gives.
async fn futures_poll_once<F: Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
        .await
}

#[test]
fn stop_requested_wakes_every_waiter_and_answers_at_once_after() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        let remote = runtime.remote();
        let woken = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            for _ in 0..3 {
                let woken = Arc::clone(&woken);
                drop(spawn(async move {
                    stop_requested().await;
                    woken.fetch_add(1, Ordering::SeqCst);
                }));
            }
            // A waiter that gives up first leaves nothing behind that breaks the rest.
            assert!(
                timeout(Duration::from_millis(1), stop_requested())
                    .await
                    .is_err()
            );
            let stopper = thread::spawn(move || remote.stop());
            stop_requested().await;
            stopper.join().unwrap();
            // This task may see the flag before the runtime has taken the request from its
            // inbox (it was polled for another reason): the waiters' wakes come with the
            // request, at the runtime's next look at the inbox, a round or so later.
            while woken.load(Ordering::SeqCst) < 3 {
                coop::yield_now().await;
            }
        });
        assert_eq!(woken.load(Ordering::SeqCst), 3);
        // Asked once, it stays asked: the next block_on sees it at once.
        runtime.block_on(stop_requested());
    });
}

#[test]
#[cfg_attr(miri, ignore = "sockets and CPU affinity: not under Miri")]
fn a_builder_starts_named_pinned_threads_and_joins_them_in_order() {
    bounded(LIMIT, || {
        let threads = coop::threads::Builder::new()
            .name("t")
            .pin_to_cpus(true)
            .spawn((0..3).map(|i| {
                move || async move {
                    stop_requested().await;
                    let cpus = rustix::thread::sched_getaffinity(None).unwrap().count();
                    (i, thread::current().name().map(str::to_owned), cpus)
                }
            }))
            .unwrap();
        assert_eq!(threads.len(), 3);
        threads.stop();
        let outputs: Vec<_> = threads.join().into_iter().map(Result::unwrap).collect();
        for (index, (i, name, cpus)) in outputs.into_iter().enumerate() {
            assert_eq!(i, index);
            assert_eq!(name.as_deref(), Some(format!("t-{index}").as_str()));
            assert_eq!(cpus, 1, "pinned to one CPU");
        }
    });
}

#[test]
fn a_thread_whose_future_panics_gives_its_panic_and_the_others_their_output() {
    bounded(LIMIT, || {
        let threads = coop::threads::Builder::new()
            .spawn((0..2).map(|i| {
                move || async move {
                    if i == 1 {
                        panic!("thread one");
                    }
                    i
                }
            }))
            .unwrap();
        let mut outputs = threads.join().into_iter();
        assert_eq!(outputs.next().unwrap().unwrap(), 0);
        let panic = outputs.next().unwrap().unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"thread one"));
    });
}

#[test]
#[cfg_attr(miri, ignore = "sockets and CPU affinity: not under Miri")]
fn reuse_port_binds_one_port_and_refuses_a_port_that_is_taken() -> io::Result<()> {
    let group = bind_reuse_port("127.0.0.1:0", 3)?;
    let port = group[0].local_addr()?.port();
    assert_eq!(group.len(), 3);
    assert!(group.iter().all(|l| l.local_addr().unwrap().port() == port));
    // A second group on the same port, as a second copy of a server would ask for.
    let again = bind_reuse_port(("127.0.0.1", port), 2).unwrap_err();
    assert_eq!(again.kind(), io::ErrorKind::AddrInUse);
    // A port that a plain listener holds.
    let plain = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = bind_reuse_port(plain.local_addr()?, 2).unwrap_err();
    assert_eq!(taken.kind(), io::ErrorKind::AddrInUse);
    // Zero sockets asked: one is bound all the same.
    assert_eq!(bind_reuse_port("127.0.0.1:0", 0)?.len(), 1);
    // One socket has nothing to share: a later SO_REUSEPORT socket cannot join it.
    let alone = bind_reuse_port("127.0.0.1:0", 1)?;
    let joiner = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    rustix::net::sockopt::set_socket_reuseport(&joiner, true)?;
    let joined = joiner.bind(&alone[0].local_addr()?.into()).unwrap_err();
    assert_eq!(joined.kind(), io::ErrorKind::AddrInUse);

    let udp = bind_udp_reuse_port("127.0.0.1:0", 2)?;
    let udp_port = udp[0].local_addr()?.port();
    assert_eq!(udp[1].local_addr()?.port(), udp_port);
    let udp_again = bind_udp_reuse_port(("127.0.0.1", udp_port), 2).unwrap_err();
    assert_eq!(udp_again.kind(), io::ErrorKind::AddrInUse);
    Ok(())
}

#[test]
#[cfg_attr(miri, ignore = "sockets and CPU affinity: not under Miri")]
fn reuse_port_listeners_on_two_threads_each_accept_their_own_clients() {
    bounded(LIMIT, || {
        let listeners = bind_reuse_port("127.0.0.1:0", 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let threads = coop::threads::Builder::new()
            .spawn(listeners.into_iter().map(|listener| {
                move || async move {
                    let server = Server::new(TcpListener::from_std(listener).unwrap());
                    let handle = server.handle();
                    let serving = spawn(server.serve(|stream, _| async move {
                        let mut buf = [0; 16];
                        while let Ok(n @ 1..) = stream.read(&mut buf).await {
                            let _ = stream.write_all(&buf[..n]).await;
                        }
                    }));
                    stop_requested().await;
                    handle.stop();
                    serving.await.unwrap();
                    handle.total_connections()
                }
            }))
            .unwrap();
        let clients = 200;
        for i in 0..clients {
            let mut client = StdStream::connect(addr).unwrap();
            let message = format!("{i:08}");
            client.write_all(message.as_bytes()).unwrap();
            let mut reply = [0; 8];
            client.read_exact(&mut reply).unwrap();
            assert_eq!(&reply, message.as_bytes());
        }
        threads.stop();
        let served: Vec<u64> = threads.join().into_iter().map(Result::unwrap).collect();
        assert_eq!(served.iter().sum::<u64>(), clients);
        // The kernel hashes each connection: both threads get some (200 connects all on
        // one of two is a 2^-199 chance).
        assert!(served.iter().all(|&n| n > 0), "{served:?}");
    });
}

#[test]
#[cfg_attr(miri, ignore = "sockets and CPU affinity: not under Miri")]
fn a_shared_limit_holds_across_threads_and_serves_the_rest_in_turn() {
    bounded(LIMIT, || {
        const MAX: usize = 3;
        const CLIENTS: usize = 12;
        let limit = SharedLimit::new(MAX);
        let listeners = bind_reuse_port("127.0.0.1:0", 2).unwrap();
        let addr = listeners[0].local_addr().unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let threads = coop::threads::Builder::new()
            .spawn(listeners.into_iter().map(|listener| {
                let (limit, running, most) = (limit.clone(), running.clone(), most.clone());
                move || async move {
                    let server =
                        Server::new(TcpListener::from_std(listener).unwrap()).shared_limit(limit);
                    let handle = server.handle();
                    let serving = spawn(server.serve(move |stream, _| {
                        let (running, most) = (running.clone(), most.clone());
                        async move {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            let mut buf = [0; 16];
                            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                                let _ = stream.write_all(&buf[..n]).await;
                            }
                            running.fetch_sub(1, Ordering::SeqCst);
                        }
                    }));
                    stop_requested().await;
                    handle.stop();
                    serving.await.unwrap();
                    handle.drained().await;
                    handle.total_connections()
                }
            }))
            .unwrap();
        // Every client connects and sends at once, then holds its connection until it
        // is let go: exactly MAX are answered, and each one let go lets one more in.
        let (answered, answers) = std::sync::mpsc::channel();
        let mut release = Vec::new();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let answered = answered.clone();
                let (go, gone) = std::sync::mpsc::channel::<()>();
                release.push(Some(go));
                thread::spawn(move || {
                    let mut client = StdStream::connect(addr).unwrap();
                    client.write_all(&[i as u8]).unwrap();
                    let mut reply = [0; 1];
                    client.read_exact(&mut reply).unwrap();
                    assert_eq!(reply[0], i as u8);
                    answered.send(i).unwrap();
                    let _ = gone.recv(); // until let go
                })
            })
            .collect();
        let mut waiting = Vec::new();
        for _ in 0..MAX {
            waiting.push(answers.recv().unwrap());
        }
        assert_eq!(limit.open(), MAX);
        for _ in MAX..CLIENTS {
            release[waiting.remove(0)].take();
            waiting.push(answers.recv().unwrap());
            assert!(limit.open() <= MAX);
        }
        drop(release);
        for client in clients {
            client.join().unwrap();
        }
        threads.stop();
        let served: u64 = threads.join().into_iter().map(Result::unwrap).sum();
        assert_eq!(served, CLIENTS as u64);
        assert_eq!(
            most.load(Ordering::SeqCst),
            MAX,
            "at most MAX at once, and MAX reached"
        );
        assert_eq!(limit.open(), 0, "every place given back");
    });
}

#[test]
#[cfg_attr(miri, ignore = "sockets and CPU affinity: not under Miri")]
fn threads_numbered_from_one_leave_cpu_zero_to_the_callers_thread() {
    bounded(LIMIT, || {
        let cpus: Vec<usize> = {
            let set = rustix::thread::sched_getaffinity(None).unwrap();
            (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&cpu| set.is_set(cpu))
                .collect()
        };
        let on = |set: rustix::thread::CpuSet| -> Vec<usize> {
            (0..rustix::thread::CpuSet::MAX_CPU)
                .filter(|&cpu| set.is_set(cpu))
                .collect()
        };
        let threads = coop::threads::Builder::new()
            .name("n")
            .number_from(1)
            .pin_to_cpus(true)
            .spawn((0..2).map(|_| {
                || async {
                    let set = rustix::thread::sched_getaffinity(None).unwrap();
                    (thread::current().name().map(str::to_owned), set)
                }
            }))
            .unwrap();
        // This thread, number 0, pins itself once the others have started.
        coop::threads::pin_to_cpu(0).unwrap();
        let here = on(rustix::thread::sched_getaffinity(None).unwrap());
        assert_eq!(here, [cpus[0]]);
        for (i, outcome) in (1..).zip(threads.join()) {
            let (name, set) = outcome.unwrap();
            assert_eq!(name.as_deref(), Some(format!("n-{i}").as_str()));
            assert_eq!(on(set), [cpus[i % cpus.len()]]);
        }
    });
}

/// A `stop_requested` wait that is dropped takes its waker with it: a task per
/// connection racing it against a read leaves nothing behind (found by a review: 1,000
/// dropped waits held 1,000 wakers until the stop).
#[test]
fn a_dropped_stop_requested_lets_go_of_its_waker() {
    struct Counted;
    impl std::task::Wake for Counted {
        fn wake(self: Arc<Self>) {}
    }
    let runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        let mut tokens = Vec::new();
        for _ in 0..1000 {
            let token = Arc::new(Counted);
            let waker = std::task::Waker::from(Arc::clone(&token));
            let mut cx = std::task::Context::from_waker(&waker);
            let mut wait = std::pin::pin!(stop_requested());
            // Polled twice: the second poll replaces its waker, and adds none.
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            tokens.push(token);
        }
        let held = tokens.iter().filter(|t| Arc::strong_count(t) > 1).count();
        assert_eq!(held, 0, "wakers of dropped waits still held");
    });
    // And a wait that lives to the stop is woken, once, and completes.
    let remote = runtime.remote();
    let waiter = thread::spawn(move || remote.stop());
    runtime.block_on(async {
        let waiting = spawn(stop_requested());
        waiting.await.unwrap();
    });
    waiter.join().unwrap();
}
