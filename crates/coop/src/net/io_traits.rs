//! What the async ecosystem builds on: `futures-io`'s `AsyncRead` and `AsyncWrite`
//! (so `futures::io::copy`, `BufReader::lines`, codecs and TLS wrappers take a coop
//! stream as it is), and with `--features tokio` tokio's; the descriptor under every
//! socket (`AsFd`, `AsRawFd`), for any socket option coop does not wrap; and `into_std`,
//! to give a socket back.
//!
//! Implemented for `TcpStream`, `UnixStream` and references to them, as async-io does: a
//! task may read through one reference while another writes through a second. Each
//! direction has one poll waiter (see [`TcpStream::poll_read_ready`]): two tasks reading
//! the same stream through these traits wake only the later one (the stream's docs say
//! so).

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_io::{AsyncRead, AsyncWrite};

use super::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};

/// What the traits need of a stream; both kinds of stream give it.
trait Duplex {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;

    /// Reads what has arrived, or parks the caller until something does.
    fn poll_read_some(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            ready!(self.poll_read_ready(cx))?;
            // `WouldBlock` cleared the readiness: the next poll parks.
            match self.try_read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    /// Writes what the socket takes, or parks the caller until it takes something.
    fn poll_write_some(
        &self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.poll_write_ready(cx))?;
            match self.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => return Poll::Ready(done),
            }
        }
    }

    /// `close` is the write side's shutdown: the peer reads EOF after everything
    /// written. A peer that is gone already is not an error of ours.
    fn close_write(&self) -> Poll<io::Result<()>> {
        match self.shutdown(Shutdown::Write) {
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

macro_rules! duplex {
    ($($stream:ty),*) => {$(
        impl Duplex for $stream {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }
            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$stream>::try_read(self, buf)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }
            fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
                <$stream>::try_write_vectored(self, bufs)
            }
            fn shutdown(&self, how: Shutdown) -> io::Result<()> {
                <$stream>::shutdown(self, how)
            }
        }
    )*};
}

duplex!(TcpStream, UnixStream);

/// The stream's own traits, through a shared reference.
macro_rules! io_traits {
    ($($stream:ty),*) => {$(
        impl AsyncRead for $stream {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut [u8],
            ) -> Poll<io::Result<usize>> {
                self.poll_read_some(cx, buf)
            }
        }

        impl AsyncWrite for $stream {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_some(cx, &[IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_some(cx, bufs)
            }

            /// Nothing to flush: every write is the socket's at once.
            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                self.close_write()
            }
        }
    )*};
}

io_traits!(TcpStream, &TcpStream, UnixStream, &UnixStream);

/// tokio's traits, for crates written against them, with `--features tokio`: the same
/// reads and writes; `poll_shutdown` is `poll_close`.
#[cfg(feature = "tokio")]
macro_rules! tokio_traits {
    ($($stream:ty),*) => {$(
        impl tokio::io::AsyncRead for $stream {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                let n = ready!(self.poll_read_some(cx, buf.initialize_unfilled()))?;
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
        }

        impl tokio::io::AsyncWrite for $stream {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_some(cx, &[IoSlice::new(buf)])
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                self.poll_write_some(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                true
            }

            fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }

            fn poll_shutdown(
                self: Pin<&mut Self>,
                _cx: &mut Context<'_>,
            ) -> Poll<io::Result<()>> {
                self.close_write()
            }
        }
    )*};
}

#[cfg(feature = "tokio")]
tokio_traits!(TcpStream, &TcpStream, UnixStream, &UnixStream);

/// The descriptor under each socket. Doing I/O on it directly bypasses the runtime's
/// readiness cache (a read that empties the socket is not seen, and the next coop read
/// finds `WouldBlock`, which costs one system call): use it for socket options.
macro_rules! descriptor {
    ($($socket:ty),*) => {$(
        impl AsFd for $socket {
            fn as_fd(&self) -> BorrowedFd<'_> {
                self.io.as_fd()
            }
        }

        impl AsRawFd for $socket {
            fn as_raw_fd(&self) -> RawFd {
                self.io.as_raw_fd()
            }
        }
    )*};
}

descriptor!(TcpStream, TcpListener, UdpSocket, UnixStream, UnixListener);

/// Back to the standard library's socket, out of the runtime.
macro_rules! into_std {
    ($($socket:ty => $std:ty),*) => {$(
        impl $socket {
            /// Gives the socket back as the standard library's, still open and still
            /// non-blocking, and out of the runtime: it leaves the OS poll, and whoever
            /// waits on it through a `poll_*` method is woken, as when a socket is
            /// dropped. `from_std` takes it back (on this runtime or another).
            pub fn into_std(self) -> io::Result<$std> {
                let Self { registration, io } = self;
                registration.deregister(io.as_fd())?;
                Ok(io.into())
            }
        }
    )*};
}

into_std!(
    TcpStream => std::net::TcpStream,
    TcpListener => std::net::TcpListener,
    UdpSocket => std::net::UdpSocket,
    UnixStream => std::os::unix::net::UnixStream,
    UnixListener => std::os::unix::net::UnixListener
);
