//! Unix stream sockets: a connection between processes of one machine, named by a path.
//! The same waiting as TCP's (try first, park on `WouldBlock`), with one difference: a
//! short read does not clear the read readiness here. A Unix stream stops a read at the
//! boundary of a write that carried descriptors or credentials, with more data queued
//! behind it and no new edge to come; a peer can send those unasked. So only a
//! `WouldBlock` proves the socket empty (one more `recv` per burst of reads).

use std::fmt;
use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::SocketAddr;
use std::path::Path;
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::net::{self, RecvFlags, SendAncillaryBuffer, SendFlags};

use super::Registration;
use crate::reactor::Direction;

/// A Unix stream socket listening on a path.
///
/// The socket file stays after the listener is dropped (as with every Unix socket):
/// remove it when done, or before binding the path again.
///
/// # Examples
///
/// ```
/// use coop::net::{UnixListener, UnixStream};
///
/// coop::block_on(async {
///     let dir = std::env::temp_dir().join(format!("coop-doc-{}", std::process::id()));
///     std::fs::create_dir_all(&dir)?;
///     let path = dir.join("echo.sock");
///     let _ = std::fs::remove_file(&path);
///     let listener = UnixListener::bind(&path)?;
///     let server = coop::spawn(async move {
///         let (stream, _) = listener.accept().await?;
///         let mut buf = [0; 64];
///         let n = stream.read(&mut buf).await?;
///         stream.write_all(&buf[..n]).await
///     });
///     let client = UnixStream::connect(&path).await?;
///     client.write_all(b"ping").await?;
///     let mut reply = [0; 4];
///     client.read(&mut reply).await?;
///     assert_eq!(&reply, b"ping");
///     server.await??;
///     std::fs::remove_dir_all(&dir)
/// })?;
/// # std::io::Result::Ok(())
/// ```
pub struct UnixListener {
    // Field order is drop order: out of the reactor's table, then closed.
    pub(super) registration: Registration,
    pub(super) io: mio::net::UnixListener,
}

impl UnixListener {
    /// Binds to `path` and listens. Fails if the path exists (a socket file left by
    /// another listener, alive or not, included).
    pub fn bind(path: impl AsRef<Path>) -> io::Result<UnixListener> {
        UnixListener::new(mio::net::UnixListener::bind(path)?)
    }

    /// Wraps a bound standard-library listener (it is switched to non-blocking).
    pub fn from_std(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        listener.set_nonblocking(true)?;
        UnixListener::new(mio::net::UnixListener::from_std(listener))
    }

    fn new(io: mio::net::UnixListener) -> io::Result<UnixListener> {
        let registration = Registration::new(io.as_fd(), io.as_raw_fd())?;
        Ok(UnixListener { registration, io })
    }

    /// Waits for a client and returns its connection. Cancel safe: dropped before it is
    /// ready, it took no client. Several tasks may accept on one listener at once.
    pub async fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, peer) = self
            .registration
            .io(Direction::Read, || self.io.accept())
            .await?;
        Ok((UnixStream::new(stream)?, peer))
    }

    /// The poll behind [`accept`](Self::accept), for hand-written futures. Only the
    /// most recent caller waits.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(UnixStream, SocketAddr)>> {
        self.registration
            .poll_io(Direction::Read, cx, || self.io.accept())
            .map(|accepted| {
                let (stream, peer) = accepted?;
                Ok((UnixStream::new(stream)?, peer))
            })
    }

    /// The address (path) the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

/// A Unix stream connection. Methods take `&self`, as [`TcpStream`](super::TcpStream)'s
/// do, with the same waiting and cancel safety; it implements the futures-io traits
/// (and tokio's, with the `tokio` feature) as `TcpStream` does.
pub struct UnixStream {
    // Field order is drop order: out of the reactor's table, then closed.
    pub(super) registration: Registration,
    pub(super) io: mio::net::UnixStream,
}

impl UnixStream {
    fn new(io: mio::net::UnixStream) -> io::Result<UnixStream> {
        let registration = Registration::new(io.as_fd(), io.as_raw_fd())?;
        Ok(UnixStream { registration, io })
    }

    /// Connects to the listener at `path`. Fails at once if nothing listens there
    /// (`ConnectionRefused`, or `NotFound` for no file), or if its queue is full
    /// (`WouldBlock`: a Unix socket does not wait for room in it).
    pub async fn connect(path: impl AsRef<Path>) -> io::Result<UnixStream> {
        let stream = UnixStream::new(mio::net::UnixStream::connect(path)?)?;
        // A Unix connect completes in the call, or fails; the wait only sees it done.
        stream.writable().await?;
        match stream.io.take_error()? {
            Some(e) => Err(e),
            None => Ok(stream),
        }
    }

    /// A connected pair, both ends in this runtime.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = mio::net::UnixStream::pair()?;
        Ok((UnixStream::new(a)?, UnixStream::new(b)?))
    }

    /// Wraps a connected standard-library stream (it is switched to non-blocking).
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> io::Result<UnixStream> {
        stream.set_nonblocking(true)?;
        UnixStream::new(mio::net::UnixStream::from_std(stream))
    }

    /// Waits until the stream may be readable.
    pub async fn readable(&self) -> io::Result<()> {
        self.registration.ready(Direction::Read).await;
        Ok(())
    }

    /// Waits until the stream may be writable.
    pub async fn writable(&self) -> io::Result<()> {
        self.registration.ready(Direction::Write).await;
        Ok(())
    }

    /// As [`TcpStream::poll_read_ready`](super::TcpStream::poll_read_ready).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.registration.poll_ready(Direction::Read, cx).map(Ok)
    }

    /// As [`TcpStream::poll_write_ready`](super::TcpStream::poll_write_ready).
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.registration.poll_ready(Direction::Write, cx).map(Ok)
    }

    /// Reads what has arrived into `buf`, waiting for data if there is none. `Ok(0)`
    /// means the peer has closed its side, or `buf` is empty.
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.registration
            .io(Direction::Read, || self.read_now(buf))
            .await
    }

    /// Reads without waiting: `WouldBlock` when nothing has arrived.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.registration
            .try_io(Direction::Read, || self.read_now(buf))
    }

    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (_, n) = net::recv(&self.io, buf, RecvFlags::empty())?;
        if n > 0 {
            self.registration.heard();
        }
        Ok(n)
    }

    /// Writes some of `buf`, waiting for room if there is none.
    pub async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.registration
            .io(Direction::Write, || self.write_now(&[IoSlice::new(buf)]))
            .await
    }

    /// Writes all of `buf`, waiting for room as often as needed. Not cancel safe: dropped
    /// midway, an unknown prefix has been sent.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.write(buf).await? {
                0 => return Err(io::ErrorKind::WriteZero.into()),
                n => buf = &buf[n..],
            }
        }
        Ok(())
    }

    /// Writes without waiting: `WouldBlock` when there is no room.
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }

    /// Writes some of `bufs`, in order, without waiting.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.registration
            .try_io(Direction::Write, || self.write_now(bufs))
    }

    fn write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n = match bufs {
            [one] => net::send(&self.io, one, SendFlags::NOSIGNAL)?,
            _ => net::sendmsg(
                &self.io,
                bufs,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )?,
        };
        if n > 0 {
            self.registration.heard();
        }
        let asked: usize = bufs.iter().map(|b| b.len()).sum();
        if n < asked {
            // The send buffer is full; room freed later brings a new edge.
            self.registration.clear(Direction::Write);
        }
        Ok(n)
    }

    /// Shuts down the read side, the write side (the peer reads EOF), or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.shutdown(how)
    }

    /// The peer's address (unnamed for a client, as most are).
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// As [`TcpStream::set_idle_timeout`](super::TcpStream::set_idle_timeout).
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.registration.set_idle_timeout(timeout);
    }
}

impl fmt::Debug for UnixListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.fmt(f)
    }
}

impl fmt::Debug for UnixStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.fmt(f)
    }
}
