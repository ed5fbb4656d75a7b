//! Sockets shared between tasks, and the errors a caller sees.

// Sockets (and /proc) all through: Miri has neither.
#![cfg(not(miri))]

use std::io;
use std::rc::Rc;
use std::time::Duration;

use coop::net::{TcpListener, TcpStream};
use coop::time::timeout;

mod common;
use common::pair;

/// Two tasks accepting on one listener both get a client: the second waiter is not lost.
#[test]
fn two_tasks_accepting_on_one_listener_each_get_a_client() -> io::Result<()> {
    coop::block_on(async {
        let listener = Rc::new(TcpListener::bind("127.0.0.1:0")?);
        let addr = listener.local_addr()?;
        let acceptors: Vec<_> = (0..2)
            .map(|_| {
                let listener = Rc::clone(&listener);
                coop::spawn(async move { listener.accept().await.map(|(s, _)| s) })
            })
            .collect();
        coop::yield_now().await; // both are parked on the listener now
        let _a = TcpStream::connect(addr).await?;
        let _b = TcpStream::connect(addr).await?;
        for acceptor in acceptors {
            timeout(Duration::from_secs(10), acceptor).await???;
        }
        Ok(())
    })
}

/// A reading task and a writing task share one stream.
#[test]
fn a_reader_and_a_writer_task_share_a_stream() -> io::Result<()> {
    coop::block_on(async {
        let (client, server) = pair().await?;
        let client = Rc::new(client);
        let echo = coop::spawn(async move {
            let mut buf = [0; 1024];
            loop {
                match server.read(&mut buf).await? {
                    0 => return io::Result::Ok(()),
                    n => server.write_all(&buf[..n]).await?,
                }
            }
        });
        const TOTAL: usize = 4 << 20;
        let writer = coop::spawn({
            let client = Rc::clone(&client);
            async move {
                let block = vec![7u8; 64 * 1024];
                for _ in 0..TOTAL / block.len() {
                    client.write_all(&block).await?;
                }
                client.shutdown(std::net::Shutdown::Write)
            }
        });
        let mut got = 0;
        let mut buf = vec![0; 64 * 1024];
        loop {
            match client.read(&mut buf).await? {
                0 => break,
                n => {
                    assert!(buf[..n].iter().all(|&b| b == 7));
                    got += n;
                }
            }
        }
        writer.await??;
        echo.await??;
        assert_eq!(got, TOTAL);
        Ok(())
    })
}

/// Connecting to a port nobody listens on fails with "connection refused", at once.
#[test]
fn connecting_to_a_closed_port_is_refused() -> io::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    coop::block_on(async {
        let attempt = timeout(
            Duration::from_secs(10),
            TcpStream::connect(("127.0.0.1", port)),
        )
        .await?;
        let error = attempt.expect_err("nobody listens there");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
        Ok(())
    })
}

/// A read into an empty buffer answers `Ok(0)` at once, as std's does, even with nothing
/// to read (it waited for data before).
#[test]
fn a_read_into_an_empty_buffer_does_not_wait() -> io::Result<()> {
    coop::block_on(async {
        let (stream, _server_side) = pair().await?;
        let read = timeout(Duration::from_secs(10), stream.read(&mut [])).await;
        assert_eq!(read.expect("it waited for data")?, 0);
        io::Result::Ok(())
    })
}

/// The first task to wait on a socket takes its task slot; a `poll_*` waiter from another
/// task comes while it holds it, and must not push it out: both are woken.
#[test]
fn a_read_future_and_a_poll_ready_waiter_are_both_woken() -> io::Result<()> {
    coop::block_on(async {
        let (client, server) = pair().await?;
        let server = Rc::new(server);
        let future = coop::spawn({
            let server = Rc::clone(&server);
            async move { server.readable().await }
        });
        coop::yield_now().await; // it holds the slot now
        let polled = coop::spawn({
            let server = Rc::clone(&server);
            async move { std::future::poll_fn(|cx| server.poll_read_ready(cx)).await }
        });
        coop::yield_now().await;
        assert_eq!(coop::stats().map(|s| s.waiters), Some(2));
        client.write_all(b"x").await?;
        timeout(Duration::from_secs(10), future).await???;
        timeout(Duration::from_secs(10), polled).await???;
        Ok(())
    })
}

/// A future that holds the task slot and is dropped (a timeout) gives it back: the next
/// task to wait takes it, and is woken.
#[test]
fn a_dropped_read_future_gives_the_slot_to_the_next_waiter() -> io::Result<()> {
    coop::block_on(async {
        let (client, server) = pair().await?;
        let server = Rc::new(server);
        let mut buf = [0; 8];
        let first = timeout(Duration::from_millis(1), server.read(&mut buf)).await;
        assert!(first.is_err(), "nothing was sent yet");
        assert_eq!(coop::stats().map(|s| s.waiters), Some(0));
        let next = coop::spawn({
            let server = Rc::clone(&server);
            async move {
                let mut buf = [0; 8];
                server.read(&mut buf).await
            }
        });
        coop::yield_now().await;
        assert_eq!(coop::stats().map(|s| s.waiters), Some(1));
        client.write_all(b"x").await?;
        assert_eq!(timeout(Duration::from_secs(10), next).await???, 1);
        Ok(())
    })
}

/// More slices than one system call takes (IOV_MAX, 1,024) make a partial write, as
/// with std, not an error.
#[test]
fn a_vectored_write_of_more_slices_than_the_kernel_takes_is_partial() -> io::Result<()> {
    coop::block_on(async {
        let (client, server) = pair().await?;
        let byte = [7u8];
        let bufs: Vec<io::IoSlice<'_>> = (0..2000).map(|_| io::IoSlice::new(&byte)).collect();
        let written = client.write_vectored(&bufs).await?;
        assert_eq!(written, 1024);
        let mut got = vec![0; 4096];
        let mut total = 0;
        while total < written {
            total += timeout(Duration::from_secs(10), server.read(&mut got[total..])).await??;
        }
        assert!(got[..total].iter().all(|&b| b == 7));
        Ok(())
    })
}

/// Closing a descriptor that was duplicated does not take the socket out of epoll (epoll
/// lets go of a socket when its last descriptor closes), and coop spends no system call
/// on it. A duplicate wrapped later under the same number takes that entry over: it is
/// registered, and woken.
#[test]
fn a_socket_wrapped_again_under_a_number_it_had_is_registered_and_woken() -> io::Result<()> {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    common::bounded(common::LIMIT, || {
        coop::block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            let std = std::net::TcpStream::connect(listener.local_addr()?)?;
            let (mut peer, _) = listener.accept()?;
            // Tests run on several threads: another may take the number in between.
            let again = loop {
                let first = std.try_clone()?;
                let number = first.as_raw_fd();
                drop(TcpStream::from_std(first)?);
                let second = std.try_clone()?;
                if second.as_raw_fd() == number {
                    break TcpStream::from_std(second)?;
                }
            };
            peer.write_all(b"hi")?;
            let mut buf = [0; 8];
            let n = timeout(Duration::from_secs(5), again.read(&mut buf))
                .await
                .map_err(|_| io::Error::other("the wrapped socket was never woken"))??;
            assert_eq!(&buf[..n], b"hi");
            Ok(())
        })
    })
}

/// A socket dropped while a `poll_*` caller still waits on it (a caller that kept no
/// hold on it: a `Weak`) wakes it, as a hang-up would: it finds the socket gone rather
/// than wait for good. Once with the task's own waker (the socket's task slot), once
/// with a combinator's (the waiting area).
#[test]
fn a_socket_dropped_under_its_poll_waiter_wakes_it() -> io::Result<()> {
    use futures::StreamExt;
    use std::future::poll_fn;
    use std::task::Poll;

    fn until_gone(server: &Rc<TcpStream>) -> impl Future<Output = bool> + use<> {
        let weak = Rc::downgrade(server);
        poll_fn(move |cx| match weak.upgrade() {
            Some(server) => server.poll_read_ready(cx).map(|_| false),
            None => Poll::Ready(true),
        })
    }

    common::bounded(common::LIMIT, || {
        coop::block_on(async {
            let (_one, first) = pair().await?;
            let (_two, second) = pair().await?;
            let (first, second) = (Rc::new(first), Rc::new(second));
            let in_slot = coop::spawn(until_gone(&first));
            let mut waiting = futures::stream::FuturesUnordered::new();
            waiting.push(until_gone(&second));
            let in_area = coop::spawn(async move { waiting.next().await });
            coop::yield_now().await;
            assert_eq!(coop::stats().unwrap().waiters, 2);
            drop((first, second));
            let limit = Duration::from_secs(5);
            let gone = timeout(limit, in_slot)
                .await
                .map_err(|_| io::Error::other("not woken"))?;
            assert_eq!(gone.ok(), Some(true));
            let gone = timeout(limit, in_area)
                .await
                .map_err(|_| io::Error::other("not woken"))?;
            assert_eq!(gone.ok(), Some(Some(true)));
            Ok(())
        })
    })
}

/// `block_on`'s own future parks on a socket (`poll_read_ready`), then ends another way:
/// the socket, dropped after `block_on` returned, or with the future as `block_on`
/// returns, wakes nobody (there is no such future any more), and leaves nothing queued.
/// (Found by a review: the wake queued `block_on`'s future between calls.)
#[test]
fn a_socket_dropped_after_its_block_on_future_ended_queues_nothing() -> io::Result<()> {
    use std::future::poll_fn;
    use std::task::Poll;

    /// Parks on `stream`, then wakes itself and ends on its next poll.
    async fn park_once_then_end(stream: &TcpStream) {
        let mut parked = false;
        poll_fn(|cx| {
            if parked {
                return Poll::Ready(());
            }
            parked = true;
            assert!(stream.poll_read_ready(cx).is_pending());
            cx.waker().wake_by_ref();
            Poll::Pending
        })
        .await;
    }

    common::bounded(common::LIMIT, || {
        let runtime = coop::Runtime::new()?;
        let (_client, server) = runtime.block_on(async {
            let (client, server) = pair().await?;
            park_once_then_end(&server).await;
            io::Result::Ok((client, server))
        })?;
        drop(server);
        assert_eq!(runtime.stats().ready, 0, "dropped after block_on returned");
        runtime.block_on(async {
            let (_client, server) = pair().await?;
            park_once_then_end(&server).await;
            io::Result::Ok(())
        })?;
        assert_eq!(runtime.stats().ready, 0, "dropped as block_on returned");
        Ok(())
    })
}

/// TCP urgent data stops a read at its mark with ordinary data already queued behind it,
/// and that data brings no new edge: a short read there must not be taken for an empty
/// socket, or the next read waits for good.
#[test]
fn data_queued_behind_an_urgent_mark_is_read() -> io::Result<()> {
    coop::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = socket2::Socket::from(std::net::TcpStream::connect(listener.local_addr()?)?);
        // Each send goes out at once (no Nagle), so all of it is queued before the
        // server's first read.
        client.set_tcp_nodelay(true)?;
        client.send(b"hello")?;
        client.send_out_of_band(b"!")?;
        client.send(b"world")?;
        let (server, _) = listener.accept().await?;
        let mut got = Vec::new();
        let mut buf = [0; 64];
        while got.len() < b"helloworld".len() {
            let read = timeout(Duration::from_secs(10), server.read(&mut buf)).await;
            let n = read.map_err(|_| {
                io::Error::other(format!(
                    "read {:?}, then nothing more within 10 s",
                    String::from_utf8_lossy(&got)
                ))
            })??;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        // The urgent byte is out of band (no SO_OOBINLINE): the stream is the rest.
        assert_eq!(String::from_utf8_lossy(&got), "helloworld");
        Ok(())
    })
}

/// `peek` sees what `read` then takes; after a short peek the next peek still finds
/// the data (nothing was taken, so nothing waits for a new edge).
#[test]
fn peek_leaves_the_data_for_read() -> io::Result<()> {
    coop::block_on(async {
        let (client, server) = pair().await?;
        client.write_all(b"ping").await?;
        let mut buf = [0; 64];
        let n = timeout(Duration::from_secs(10), server.peek(&mut buf)).await??;
        assert_eq!(&buf[..n], b"ping");
        let n = timeout(Duration::from_secs(10), server.peek(&mut buf)).await??;
        assert_eq!(&buf[..n], b"ping");
        let n = timeout(Duration::from_secs(10), server.read(&mut buf)).await??;
        assert_eq!(&buf[..n], b"ping");
        drop(client);
        assert_eq!(
            timeout(Duration::from_secs(10), server.peek(&mut buf)).await??,
            0
        );
        Ok(())
    })
}

/// Keepalive and linger as set; a linger of zero resets the connection at close.
#[test]
fn keepalive_and_linger_are_set_and_a_zero_linger_resets() -> io::Result<()> {
    coop::block_on(async {
        let (client, server) = pair().await?;
        assert!(!server.keepalive()?);
        server.set_keepalive(Some(Duration::from_secs(60)))?;
        assert!(server.keepalive()?);
        server.set_keepalive(None)?;
        assert!(!server.keepalive()?);
        assert_eq!(server.linger()?, None);
        server.set_linger(Some(Duration::ZERO))?;
        assert_eq!(server.linger()?, Some(Duration::ZERO));
        drop(server);
        let mut buf = [0; 8];
        let read = timeout(Duration::from_secs(10), client.read(&mut buf)).await?;
        assert_eq!(
            read.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
        Ok(())
    })
}

/// A connected UDP socket sends to its peer and receives only from it.
#[test]
fn a_connected_udp_socket_talks_to_its_peer_only() -> io::Result<()> {
    use coop::net::UdpSocket;
    coop::block_on(async {
        let peer = UdpSocket::bind("127.0.0.1:0")?;
        let stranger = UdpSocket::bind("127.0.0.1:0")?;
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.connect(peer.local_addr()?).await?;
        assert_eq!(socket.peer_addr()?, peer.local_addr()?);
        socket.send(b"hello").await?;
        let mut buf = [0; 16];
        let (n, from) = timeout(Duration::from_secs(10), peer.recv_from(&mut buf)).await??;
        assert_eq!((&buf[..n], from), (&b"hello"[..], socket.local_addr()?));
        // The kernel drops what comes from anyone else.
        stranger.send_to(b"intruder", socket.local_addr()?).await?;
        peer.send_to(b"reply", socket.local_addr()?).await?;
        let n = timeout(Duration::from_secs(10), socket.recv(&mut buf)).await??;
        assert_eq!(&buf[..n], b"reply");
        assert_eq!(
            socket.try_recv(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        // Unconnected: send has nowhere to go.
        assert!(stranger.send(b"x").await.is_err());
        Ok(())
    })
}
