//! What hyper asks of a runtime (`--features hyper`): an [`Executor`] for HTTP/2's
//! per-stream tasks and a [`Timer`] for its timeouts (an HTTP/1 request's header read,
//! HTTP/2's keep-alive pings), both on the coop runtime of the thread that uses them.
//!
//! A [`TcpStream`] has hyper's I/O traits itself: hyper reads straight into its buffer's
//! spare room, which no one zeroes first. Anything else with futures-io's traits (a TLS
//! stream over a coop socket) gets hyper's through `smol-hyper`'s `FuturesIo`, which
//! zeroes the spare room before each read (futures-io reads into initialised memory).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//!
//! use hyper::server::conn::{http1, http2};
//!
//! let mut h1 = http1::Builder::new();
//! h1.timer(coop::hyper::Timer).header_read_timeout(Duration::from_secs(10));
//! let h2 = http2::Builder::new(coop::hyper::Executor);
//! # let _ = (h1, h2);
//! ```

use std::future::Future;
use std::io::{self, IoSlice};
use std::mem::ManuallyDrop;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use ::hyper::rt::ReadBufCursor;

use crate::net::TcpStream;
use crate::time::{Sleep, sleep, sleep_until};

/// Runs hyper's background futures (an HTTP/2 connection's streams) as detached tasks of
/// the coop runtime of the thread that asks: the futures need not be `Send`.
///
/// # Panics
///
/// `execute` panics when called outside a coop runtime (hyper calls it from within the
/// connection's own poll, which runs in one).
#[derive(Debug, Clone, Copy, Default)]
pub struct Executor;

impl<F> ::hyper::rt::Executor<F> for Executor
where
    F: Future + 'static,
{
    fn execute(&self, future: F) {
        drop(crate::spawn(async move {
            future.await;
        }));
    }
}

/// hyper's timer, on [`coop::time`](crate::time): a sleep made by it belongs to the
/// thread that first made it, as a coop `Sleep` belongs to its runtime.
///
/// hyper wants its sleeps `Send` and `Sync`. A coop `Sleep` is neither (it holds its
/// runtime's core), so this one carries it with the id of the thread that made it, and
/// touches it only there: polled on another thread it panics, and dropped on another
/// thread it is leaked (its runtime's timer fires into a waker nobody waits on).
/// hyper polls and drops a connection's sleeps in that connection's future, which a coop
/// task runs on one thread, so neither happens.
///
/// # Panics
///
/// A sleep panics when polled outside a coop runtime, or on a thread other than the one
/// that made it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timer;

impl ::hyper::rt::Timer for Timer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn ::hyper::rt::Sleep>> {
        Box::pin(ThreadSleep::new(sleep(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn ::hyper::rt::Sleep>> {
        Box::pin(ThreadSleep::new(sleep_until(deadline)))
    }

    fn now(&self) -> Instant {
        crate::time::now()
    }
}

/// A coop [`Sleep`] bound to the thread that made it.
struct ThreadSleep {
    owner: ThreadId,
    sleep: ManuallyDrop<Sleep>,
}

impl ThreadSleep {
    fn new(sleep: Sleep) -> ThreadSleep {
        ThreadSleep {
            owner: thread::current().id(),
            sleep: ManuallyDrop::new(sleep),
        }
    }
}

// SAFETY: what is not `Send` in a `Sleep` is the `Rc` of its runtime's core, which it
// takes when first polled. That `Rc` (and the `Sleep` around it) is reached only by
// `poll` and `drop` below, each of which checks that it runs on `owner`, the thread that
// made the `Sleep`: `poll` panics elsewhere before touching it, and `drop` elsewhere
// leaks it (no reference count is changed off its thread). Moving the bytes between
// threads touches nothing.
#[allow(unsafe_code)]
unsafe impl Send for ThreadSleep {}

// SAFETY: a `&ThreadSleep` gives access to nothing: every use of the `Sleep` goes through
// `Pin<&mut Self>` or `&mut self` (poll, drop), never `&self`.
#[allow(unsafe_code)]
unsafe impl Sync for ThreadSleep {}

impl Future for ThreadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        assert!(
            self.owner == thread::current().id(),
            "a coop::hyper::Timer sleep polled on a thread other than its own"
        );
        // `Sleep` is `Unpin`, and so is this.
        Pin::new(&mut *self.sleep).poll(cx)
    }
}

impl ::hyper::rt::Sleep for ThreadSleep {}

impl Drop for ThreadSleep {
    fn drop(&mut self) {
        if self.owner == thread::current().id() {
            // SAFETY: dropped once: this is the `ThreadSleep`'s own drop, and the field is
            // not used after.
            #[allow(unsafe_code)]
            unsafe {
                ManuallyDrop::drop(&mut self.sleep)
            }
        }
    }
}

/// Reads into hyper's buffer as it is: its spare room may be uninitialised.
impl ::hyper::rt::Read for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.poll_read_ready(cx))?;
            // SAFETY: the slice is written only by the kernel's `recv`, which never
            // de-initialises anything (the contract of `as_mut`).
            #[allow(unsafe_code)]
            let room = unsafe { buf.as_mut() };
            // `WouldBlock` cleared the readiness: the next poll parks.
            match self.try_read_uninit(room) {
                Ok(n) => {
                    // SAFETY: `recv` initialised exactly the first `n` bytes of the room.
                    #[allow(unsafe_code)]
                    unsafe {
                        buf.advance(n)
                    };
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Writes as futures-io's `AsyncWrite` does; `poll_shutdown` shuts the write side.
impl ::hyper::rt::Write for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_io::AsyncWrite::poll_write(Pin::new(&mut &*self), cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        futures_io::AsyncWrite::poll_write_vectored(Pin::new(&mut &*self), cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(match self.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(()),
        })
    }
}
