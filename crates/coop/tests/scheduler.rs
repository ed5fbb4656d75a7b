//! The scheduler, specified: order, spawning, output, parking, fairness, idleness.

use std::cell::{Cell, RefCell};
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::{LIMIT, bounded};
use coop::net::{TcpListener, TcpStream};
use coop::{Runtime, spawn, yield_now};

/// Tasks run in the order they were made ready, and each yield sends a task to the back.
#[test]
fn ready_tasks_run_in_fifo_order() {
    bounded(LIMIT, || {
        let log = Rc::new(RefCell::new(Vec::new()));
        coop::block_on({
            let log = Rc::clone(&log);
            async move {
                let tasks: Vec<_> = (0..3)
                    .map(|id| {
                        let log = Rc::clone(&log);
                        spawn(async move {
                            for step in 0..2 {
                                log.borrow_mut().push((id, step));
                                yield_now().await;
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
            }
        });
        assert_eq!(
            *log.borrow(),
            [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
        );
    });
}

/// A task may spawn tasks, which may spawn tasks; outputs come back through the handles.
#[test]
fn tasks_spawn_tasks_and_handles_give_their_output() {
    let total = coop::block_on(async {
        let outer = spawn(async {
            let inner = spawn(async { spawn(async { String::from("deep") }).await });
            format!("{} and {}", inner.await.unwrap().unwrap(), "outer")
        });
        outer.await.unwrap()
    });
    assert_eq!(total, "deep and outer");
}

/// A dropped handle detaches its task: the task still runs to its end.
#[test]
fn a_detached_task_runs_to_completion() {
    let done = Rc::new(Cell::new(false));
    let runtime = Runtime::new().unwrap();
    runtime.block_on({
        let done = Rc::clone(&done);
        async move {
            let flag = Rc::clone(&done);
            drop(spawn(async move {
                yield_now().await;
                flag.set(true);
            }));
            while !done.get() {
                yield_now().await;
            }
        }
    });
    assert!(done.get());
    assert_eq!(
        runtime.stats().tasks,
        0,
        "a finished task leaves nothing behind"
    );
}

/// A task parked on a socket stays parked (and costs no polls) until its data arrives,
/// then resumes where it stopped.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_parked_task_resumes_when_its_socket_turns_ready() -> io::Result<()> {
    bounded(LIMIT, || -> io::Result<()> {
        let runtime = Runtime::new()?;
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let client = TcpStream::connect(listener.local_addr()?).await?;
            let (server_side, _) = listener.accept().await?;
            let polls = Rc::new(Cell::new(0));
            let reader = spawn({
                let polls = Rc::clone(&polls);
                async move {
                    let mut buf = [0; 16];
                    let n = {
                        let mut read = std::pin::pin!(server_side.read(&mut buf));
                        std::future::poll_fn(|cx| {
                            polls.set(polls.get() + 1);
                            read.as_mut().poll(cx)
                        })
                        .await?
                    };
                    io::Result::Ok(buf[..n].to_vec())
                }
            });
            for _ in 0..10 {
                yield_now().await;
            }
            assert!(!reader.is_finished(), "nothing was sent yet");
            assert_eq!(
                polls.get(),
                1,
                "a parked task is not polled again until woken"
            );
            assert_eq!(runtime.stats().ready, 0, "only the root is running");

            client.write_all(b"wake up").await?;
            assert_eq!(reader.await??, b"wake up");
            assert_eq!(polls.get(), 2, "one wake, one poll");
            Ok(())
        })
    })
}

/// A task whose socket never runs dry still lets the others run: after a bounded budget
/// of ready operations it goes to the back of the queue.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_flooding_client_does_not_starve_other_tasks() -> io::Result<()> {
    bounded(LIMIT, || -> io::Result<()> {
        const FLOOD: usize = 256 * 1024;
        coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let flooder = thread::spawn(move || {
                let mut client = std::net::TcpStream::connect(addr).unwrap();
                client.write_all(&vec![7u8; FLOOD]).unwrap();
            });
            let (stream, _) = listener.accept().await?;
            let progress = Rc::new(Cell::new(0));

            // One byte per read: the socket stays readable for the whole flood, so without a
            // budget this task would never give the thread up.
            let reader = spawn({
                let progress = Rc::clone(&progress);
                async move {
                    let mut byte = [0; 1];
                    while progress.get() < FLOOD {
                        match stream.read(&mut byte).await? {
                            0 => break,
                            n => progress.set(progress.get() + n),
                        }
                    }
                    io::Result::Ok(progress.get())
                }
            });
            let mut turns_during_flood = 0;
            while !reader.is_finished() {
                if progress.get() > 0 && progress.get() < FLOOD {
                    turns_during_flood += 1;
                }
                yield_now().await;
            }
            assert_eq!(reader.await??, FLOOD);
            flooder.join().unwrap();
            // Budget 127 per turn: about FLOOD / 127 = 2064 turns for everyone else.
            assert!(
                turns_during_flood >= 1000,
                "other tasks got only {turns_during_flood} turns during the flood"
            );
            Ok(())
        })
    })
}

/// A task whose every ready operation is expensive (50 µs of work per read, as a TLS
/// record's decryption and reply can be) gives the thread up after a slice of about
/// 200 µs, not after the 127 operations that the budget allows cheap ones.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_task_whose_reads_are_expensive_yields_after_a_slice() -> io::Result<()> {
    bounded(LIMIT, || -> io::Result<()> {
        const READS: usize = 2000;
        coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let flooder = thread::spawn(move || {
                let mut client = std::net::TcpStream::connect(addr).unwrap();
                client.write_all(&[7u8; READS]).unwrap();
            });
            let (stream, _) = listener.accept().await?;
            let turn = Rc::new(Cell::new(0u64));
            let reader = spawn({
                let turn = Rc::clone(&turn);
                async move {
                    let mut byte = [0; 1];
                    let (mut seen, mut in_a_row, mut most) = (u64::MAX, 0, 0);
                    for _ in 0..READS {
                        if stream.read(&mut byte).await? == 0 {
                            break;
                        }
                        // Reads in one turn of the other task: how long this one held on.
                        if turn.get() == seen {
                            in_a_row += 1;
                        } else {
                            (seen, in_a_row) = (turn.get(), 1);
                        }
                        most = most.max(in_a_row);
                        let work = Instant::now();
                        while work.elapsed() < Duration::from_micros(50) {
                            std::hint::spin_loop();
                        }
                    }
                    io::Result::Ok(most)
                }
            });
            while !reader.is_finished() {
                turn.set(turn.get() + 1);
                yield_now().await;
            }
            let most = reader.await??;
            flooder.join().unwrap();
            // 8 reads before the slice starts, 8 more at 50 µs each measure 400 µs: it
            // yields at the 16th. Without the slice, 127.
            assert!(most <= 32, "{most} expensive reads in one turn");
            Ok(())
        })
    })
}

/// CPU time this thread has used (the scheduler's own accounting, in nanoseconds).
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    let ns = stat.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(ns)
}

/// With nothing to do (a listener waiting, a task parked on it), the run loop sleeps in
/// the OS poll: no CPU is spent while the timer runs down.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn an_idle_runtime_does_not_spin() -> io::Result<()> {
    bounded(LIMIT, || -> io::Result<()> {
        coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let waiting = spawn(async move { listener.accept().await.map(|_| ()) });
            yield_now().await;

            let (cpu, wall) = (thread_cpu(), Instant::now());
            coop::time::sleep(Duration::from_millis(200)).await;
            let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());

            assert!(wall >= Duration::from_millis(200));
            assert!(
                cpu < Duration::from_millis(10),
                "{cpu:?} of CPU in {wall:?} idle"
            );
            assert!(!waiting.is_finished());
            Ok(())
        })
    })
}

/// A waker used from another thread reaches the runtime and wakes the task.
#[test]
fn a_wake_from_another_thread_reaches_the_runtime() {
    bounded(LIMIT, || {
        let slot: Arc<Mutex<(bool, Option<Waker>)>> = Arc::default();
        let (send_waker, get_waker) = mpsc::channel::<()>();
        let other = thread::spawn({
            let slot = Arc::clone(&slot);
            move || {
                get_waker.recv().unwrap();
                let waker = {
                    let mut slot = slot.lock().unwrap();
                    slot.0 = true;
                    slot.1.take().unwrap()
                };
                waker.wake();
            }
        });
        coop::block_on(async {
            let mut announced = false;
            std::future::poll_fn(|cx| {
                let mut slot = slot.lock().unwrap();
                if slot.0 {
                    return Poll::Ready(());
                }
                slot.1 = Some(cx.waker().clone());
                if !announced {
                    announced = true;
                    send_waker.send(()).unwrap();
                }
                Poll::Pending
            })
            .await;
        });
        other.join().unwrap();
    });
}

/// Outside a runtime, spawning is a programming error with a clear message.
#[test]
#[should_panic(expected = "coop::spawn called outside a coop runtime")]
fn spawn_outside_a_runtime_panics_clearly() {
    drop(spawn(async {}));
}

/// Tasks left running when the runtime goes are dropped with it, sockets and all.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn dropping_the_runtime_drops_its_tasks() -> io::Result<()> {
    bounded(LIMIT, || -> io::Result<()> {
        let dropped = Rc::new(Cell::new(false));
        struct Flag(Rc<Cell<bool>>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let runtime = Runtime::new()?;
        let addr = runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let flag = Flag(Rc::clone(&dropped));
            drop(spawn(async move {
                let _flag = flag;
                let _ = listener.accept().await;
            }));
            yield_now().await;
            io::Result::Ok(addr)
        })?;
        assert_eq!(runtime.stats().sockets, 1);
        drop(runtime);
        assert!(dropped.get());
        // The listener is closed: nobody accepts there any more.
        assert!(std::net::TcpStream::connect(addr).is_err());
        Ok(())
    })
}

/// `block_on`'s future that wakes itself in the poll that completes it leaves nothing
/// queued behind it: the runtime's `ready` count is 0, and the next `block_on` runs
/// its own future, once per wake.
#[test]
fn a_block_on_future_that_wakes_itself_as_it_ends_leaves_nothing_queued() {
    bounded(LIMIT, || {
        let runtime = Runtime::new().unwrap();
        runtime.block_on(std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::Ready(())
        }));
        assert_eq!(runtime.stats().ready, 0);
        let polls = Cell::new(0);
        runtime.block_on(std::future::poll_fn(|_| {
            polls.set(polls.get() + 1);
            Poll::Ready(())
        }));
        assert_eq!(polls.get(), 1);
    });
}
