//! `Server`: a connection counts from accept until its handler returns.

// Sockets (and /proc) all through: Miri has neither.
#![cfg(not(miri))]

mod common;

use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::{LIMIT, bounded};
use coop::net::TcpStream;
use coop::{Server, TcpListener, spawn};

/// A handler that hands its stream to another task and returns: the connection is no
/// longer counted, `drained` completes, and the limit of 1 admits the next client.
#[test]
fn a_connection_counts_until_its_handler_returns() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let server = Server::new(TcpListener::bind("127.0.0.1:0")?).max_connections(1);
            let addr = server.local_addr()?;
            let handle = server.handle();
            let kept: Rc<std::cell::RefCell<Vec<TcpStream>>> = Rc::default();
            drop(spawn(server.serve({
                let kept = Rc::clone(&kept);
                move |stream, _| {
                    let kept = Rc::clone(&kept);
                    async move {
                        let mut buf = [0; 8];
                        let n = stream.read(&mut buf).await.unwrap_or(0);
                        let _ = stream.write_all(&buf[..n]).await;
                        // Handed on to a task that keeps it: the handler is done.
                        drop(spawn(async move { kept.borrow_mut().push(stream) }));
                    }
                }
            })));
            let mut buf = [0; 8];
            let first = TcpStream::connect(addr).await?;
            // The handler parks on its socket before it reads (the case where a socket
            // kept its task, and the count with it). At the limit, the accept loop waits
            // for room, not on the listener: the one parked socket is the handler's.
            while handle.open_connections() == 0 || coop::stats().unwrap().parked_read == 0 {
                coop::yield_now().await;
            }
            first.write_all(b"one").await?;
            assert_eq!(first.read(&mut buf).await?, 3);
            coop::time::timeout(Duration::from_secs(10), handle.drained()).await?;
            assert_eq!(handle.open_connections(), 0);
            // The first connection is still open (kept), but no longer counted.
            let second = TcpStream::connect(addr).await?;
            second.write_all(b"two").await?;
            let n = coop::time::timeout(Duration::from_secs(10), second.read(&mut buf)).await??;
            assert_eq!(&buf[..n], b"two");
            assert_eq!(kept.borrow().len(), 2);
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// `stop` is seen at once through every handle, and the port refuses new clients once
/// the accept loop has returned, while an open connection is served on.
#[test]
fn a_stopped_server_says_so_and_refuses_new_clients() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let server = Server::new(TcpListener::bind("127.0.0.1:0")?);
            let addr = server.local_addr()?;
            let (handle, watcher) = (server.handle(), server.handle());
            let serving = spawn(server.serve(|stream, _| async move {
                let mut buf = [0; 8];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }));
            let open = TcpStream::connect(addr).await?;
            while handle.open_connections() == 0 {
                coop::yield_now().await;
            }
            assert!(!watcher.is_stopped());
            handle.stop();
            assert!(watcher.is_stopped());
            serving.await?;
            let refused = TcpStream::connect(addr).await;
            assert_eq!(
                refused.err().map(|e| e.kind()),
                Some(io::ErrorKind::ConnectionRefused)
            );
            open.write_all(b"still").await?;
            let mut buf = [0; 8];
            assert_eq!(open.read(&mut buf).await?, 5);
            io::Result::Ok(())
        })
    })
    .unwrap();
}

/// A handler that panics before it makes its future (in the closure itself) costs that
/// client its connection, as a panic inside the future does: the accept loop goes on,
/// the connection is not counted, and the next client is served.
#[test]
fn a_panic_in_the_handlers_closure_ends_that_connection_only() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let server = Server::new(TcpListener::bind("127.0.0.1:0")?).max_connections(1);
            let addr = server.local_addr()?;
            let handle = server.handle();
            let mut first = true;
            let serving = spawn(server.serve(move |stream, _| {
                if std::mem::take(&mut first) {
                    panic!("a bug before the handler's future");
                }
                async move {
                    let mut buf = [0; 16];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        let _ = stream.write_all(&buf[..n]).await;
                    }
                }
            }));
            let doomed = TcpStream::connect(addr).await?;
            let mut buf = [0; 4];
            // Closed by the server: EOF, or a reset.
            let read = coop::time::timeout(LIMIT, doomed.read(&mut buf)).await?;
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            assert!(!serving.is_finished(), "the accept loop ended");
            assert_eq!(handle.open_connections(), 0);
            let next = TcpStream::connect(addr).await?;
            next.write_all(b"ping").await?;
            let n = coop::time::timeout(LIMIT, next.read(&mut buf)).await??;
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(handle.total_connections(), 2);
            handle.stop();
            coop::time::timeout(LIMIT, serving).await?.unwrap();
            io::Result::Ok(())
        })
        .unwrap();
    });
}

/// `stopped` completes for every waiter at the stop, at once for one that comes after,
/// and a waiter dropped before the stop (cancelled) leaves the others as they were.
#[test]
fn stopped_wakes_every_waiter_once_and_a_cancelled_one_is_forgotten() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let server = Server::new(TcpListener::bind("127.0.0.1:0")?);
            let handle = server.handle();
            let woken = Rc::new(std::cell::Cell::new(0));
            let mut waiters = Vec::new();
            for _ in 0..1000 {
                let (handle, woken) = (handle.clone(), Rc::clone(&woken));
                waiters.push(spawn(async move {
                    handle.stopped().await;
                    woken.set(woken.get() + 1);
                }));
            }
            // Half of them cancelled while they wait.
            coop::yield_now().await;
            for waiter in waiters.iter().step_by(2) {
                waiter.abort();
            }
            coop::yield_now().await;
            assert_eq!(woken.get(), 0);
            handle.stop();
            for waiter in waiters {
                let _ = waiter.await;
            }
            assert_eq!(woken.get(), 500);
            // After the stop: at once.
            handle.stopped().await;
            io::Result::Ok(())
        })
        .unwrap();
    });
}

/// A waiter polled again with another waker is woken through the new one, and one whose
/// waker wakes another waiter's drop is no trouble (the stop wakes outside its borrow).
#[test]
fn stopped_follows_the_latest_waker_and_wakes_outside_its_borrow() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let server = Server::new(TcpListener::bind("127.0.0.1:0")?);
            let handle = server.handle();
            let mut moved = Box::pin(handle.stopped());
            // Polled once by a task that then lets it go to this one.
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            assert!(moved.as_mut().poll(&mut cx).is_pending());
            // Another waiter, dropped by the task the stop wakes.
            let other = Rc::new(std::cell::RefCell::new(Some(Box::pin(handle.stopped()))));
            if let Some(other) = other.borrow_mut().as_mut() {
                assert!(other.as_mut().poll(&mut cx).is_pending());
            }
            let dropping = spawn({
                let handle = handle.clone();
                let other = Rc::clone(&other);
                async move {
                    handle.stopped().await;
                    other.borrow_mut().take();
                }
            });
            coop::yield_now().await;
            let stopper = spawn({
                let handle = handle.clone();
                async move { handle.stop() }
            });
            // This task's own waker now: the stop must wake it, not the noop one.
            moved.await;
            stopper.await?;
            dropping.await?;
            assert!(other.borrow().is_none());
            io::Result::Ok(())
        })
        .unwrap();
    });
}

/// `serve_either`: a boxed handler's connection counts as an inline one does (open, in
/// all, in `drained`), and a panic in it ends that connection only.
#[test]
fn boxed_handlers_count_and_fail_as_inline_ones() {
    use coop::Handler;
    bounded(LIMIT, || {
        coop::block_on(async {
            let server = Server::new(TcpListener::bind("127.0.0.1:0")?).max_connections(1);
            let addr = server.local_addr()?;
            let handle = server.handle();
            let mut accepted = 0;
            let serving = spawn(server.serve_either(move |stream: TcpStream, _| {
                accepted += 1;
                let echo = async move {
                    let mut buf = [0; 16];
                    while let Ok(n @ 1..) = stream.read(&mut buf).await {
                        let _ = stream.write_all(&buf[..n]).await;
                    }
                };
                match accepted {
                    // The first, boxed: an echo. The second, boxed: it panics.
                    1 => Handler::Boxed(Box::pin(echo)),
                    2 => Handler::Boxed(Box::pin(async { panic!("a bug in a boxed handler") })),
                    _ => Handler::Inline(echo),
                }
            }));
            let mut buf = [0; 8];
            let boxed = TcpStream::connect(addr).await?;
            boxed.write_all(b"box").await?;
            assert_eq!(coop::time::timeout(LIMIT, boxed.read(&mut buf)).await??, 3);
            // The boxed connection is counted, and holds the one place.
            assert_eq!(handle.open_connections(), 1);
            let panicking = TcpStream::connect(addr).await?;
            drop(boxed);
            let read = coop::time::timeout(LIMIT, panicking.read(&mut buf)).await?;
            assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
            // The panic ended its connection; the server goes on, inline.
            let inline = TcpStream::connect(addr).await?;
            inline.write_all(b"inline").await?;
            assert_eq!(coop::time::timeout(LIMIT, inline.read(&mut buf)).await??, 6);
            drop(inline);
            coop::time::timeout(LIMIT, handle.drained()).await?;
            assert_eq!(handle.total_connections(), 3);
            handle.stop();
            coop::time::timeout(LIMIT, serving).await?.unwrap();
            io::Result::Ok(())
        })
        .unwrap();
    });
}
