use std::fmt;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};
use std::task::{Context, Poll};
use std::time::Duration;

use rustix::net::{self, RecvFlags, SendAncillaryBuffer, SendFlags};

use super::Registration;
use super::resolve::{ToSocketAddrs, resolve};
use crate::reactor::Direction;

/// A TCP connection, registered with the runtime that created it.
///
/// Methods take `&self`, so a reading task and a writing task may share one stream (in
/// an `Rc`).
///
/// # Waiting, and cancel safety
///
/// * The futures ([`read`](Self::read), [`write`](Self::write),
///   [`readable`](Self::readable), ...) may wait in any number, in any tasks, in both
///   directions: each is woken when its direction turns ready. Dropped before it is
///   ready (in a `select`, a `timeout`), such a future takes its place back, and nothing
///   was read or written: `read`, `write`, `readable` and `writable` are cancel safe.
///   `write_all` is not: dropped midway, an unknown prefix of the buffer has been sent.
/// * [`poll_read_ready`](Self::poll_read_ready) and
///   [`poll_write_ready`](Self::poll_write_ready), for hand-written futures, keep one
///   waiter per direction: the most recent caller's.
/// * A wake is a hint: the next `try_*` may still say `WouldBlock`, and the waiter must
///   poll again to wait again.
/// * Through the futures-io traits (`AsyncRead`, `AsyncWrite`, and tokio's with the
///   `tokio` feature), a stream waits as the `poll_*` methods do: one waiter per
///   direction. A reading task and a writing task may share a stream through them; two
///   tasks *reading* one stream through `AsyncRead` at once wake only the later one (the
///   earlier waits until it polls again). Give such readers the futures above instead.
///
/// # Examples
///
/// ```no_run
/// use coop::net::TcpStream;
///
/// coop::block_on(async {
///     let stream = TcpStream::connect("127.0.0.1:25000").await?;
///     stream.write_all(b"Hello\n").await?;
///     let mut reply = [0; 64];
///     let n = stream.read(&mut reply).await?;
///     assert_eq!(&reply[..n], b"GOT:Hello\n");
///     std::io::Result::Ok(())
/// })
/// .unwrap();
/// ```
pub struct TcpStream {
    // Field order is drop order: out of the reactor's table, then closed.
    pub(super) registration: Registration,
    pub(super) io: mio::net::TcpStream,
}

impl TcpStream {
    pub(crate) fn new(io: mio::net::TcpStream) -> io::Result<Self> {
        let registration = Registration::new(io.as_fd(), io.as_raw_fd())?;
        Ok(TcpStream { registration, io })
    }

    /// Opens a connection to `addr`, trying each address it resolves to in turn, and
    /// returns the first that connects, or the last error.
    ///
    /// A host name is looked up on the blocking pool ([`spawn_blocking`]): the
    /// runtime's other tasks run on meanwhile. A name that does not resolve is an error
    /// that names it. Cancel safe: dropped midway, it leaves no connection behind.
    ///
    /// [`spawn_blocking`]: crate::spawn_blocking
    pub async fn connect<A: ToSocketAddrs>(addr: A) -> io::Result<TcpStream> {
        let mut last = None;
        for addr in resolve(&addr).await? {
            match Self::connect_one(addr).await {
                Ok(stream) => return Ok(stream),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "the address resolved to nothing",
            )
        }))
    }

    async fn connect_one(addr: SocketAddr) -> io::Result<TcpStream> {
        let stream = TcpStream::new(mio::net::TcpStream::connect(addr)?)?;
        // A non-blocking connect is done when the socket turns writable: then either
        // SO_ERROR holds the reason it failed, or the peer address is there.
        loop {
            stream.writable().await?;
            if let Some(e) = stream.io.take_error()? {
                return Err(e);
            }
            match stream.io.peer_addr() {
                Ok(_) => return Ok(stream),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    stream.registration.clear(Direction::Write);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Wraps a connected standard-library stream (it is switched to non-blocking).
    pub fn from_std(stream: std::net::TcpStream) -> io::Result<TcpStream> {
        stream.set_nonblocking(true)?;
        TcpStream::new(mio::net::TcpStream::from_std(stream))
    }

    /// Waits until the stream may be readable: the seed's `yield 'recv', sock`.
    ///
    /// Returns at once when readiness is cached from an earlier event; the next
    /// [`try_read`](Self::try_read) may still find nothing and say `WouldBlock`.
    pub async fn readable(&self) -> io::Result<()> {
        self.registration.ready(Direction::Read).await;
        Ok(())
    }

    /// Waits until the stream may be writable: the seed's `yield 'send', sock`.
    pub async fn writable(&self) -> io::Result<()> {
        self.registration.ready(Direction::Write).await;
        Ok(())
    }

    /// The poll behind [`readable`](Self::readable), for hand-written futures that wait
    /// on several things at once: `Ready` when the stream may be readable, otherwise the
    /// caller is parked in the read waiting area, replacing the previous `poll_read_ready`
    /// caller (only the most recent one is woken). The caller stays parked until then,
    /// even if it stops waiting (counted in [`Stats::waiters`](crate::Stats)); a wake it
    /// no longer needs costs it one poll.
    #[inline]
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.registration.poll_ready(Direction::Read, cx).map(Ok)
    }

    /// The poll behind [`writable`](Self::writable); see
    /// [`poll_read_ready`](Self::poll_read_ready).
    #[inline]
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.registration.poll_ready(Direction::Write, cx).map(Ok)
    }

    /// Reads what has arrived into `buf`, waiting for data if there is none. `Ok(0)`
    /// means the peer has closed its side, or `buf` is empty (at once, as for std).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.registration
            .io(Direction::Read, || self.read_now(buf))
            .await
    }

    /// Reads without waiting: `WouldBlock` when nothing has arrived.
    #[inline]
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.registration
            .try_io(Direction::Read, || self.read_now(buf))
    }

    #[inline]
    fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        // Straight to the system call (rustix): std's and libc's wrappers around it cost
        // more than the rest of a message's bookkeeping.
        let room = buf.len();
        let (_, n) = net::recv(&self.io, buf, RecvFlags::empty())?;
        if n > 0 {
            self.registration.heard();
            if n < room {
                // A short read emptied the socket's queue (unless urgent data stopped it);
                // new data brings a new edge. Saves the read that would only have said
                // WouldBlock.
                self.registration.read_short();
            }
        }
        Ok(n)
    }

    /// [`try_read`](Self::try_read) into memory that need not be initialised (hyper's
    /// read buffer): returns how many bytes it wrote at the front of `buf`, each
    /// initialised by the kernel.
    #[cfg(feature = "hyper")]
    pub(crate) fn try_read_uninit(
        &self,
        buf: &mut [std::mem::MaybeUninit<u8>],
    ) -> io::Result<usize> {
        self.registration.try_io(Direction::Read, || {
            let room = buf.len();
            let ((read, _), _) = net::recv(&self.io, &mut *buf, RecvFlags::empty())?;
            let n = read.len();
            if n > 0 {
                self.registration.heard();
                if n < room {
                    self.registration.read_short();
                }
            }
            Ok(n)
        })
    }

    /// Reads what has arrived into `buf` without taking it from the stream: the next
    /// read gets the same bytes. Waits for data if there is none; `Ok(0)` means the peer
    /// has closed its side (or `buf` is empty). Cancel safe.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // A short peek proves nothing about the queue (nothing was taken), so only
        // WouldBlock clears the readiness.
        self.registration
            .io(Direction::Read, || {
                Ok(net::recv(&self.io, &mut *buf, RecvFlags::PEEK)?.1)
            })
            .await
    }

    /// Writes some of `buf`, waiting for room if there is none. Returns how much was
    /// written.
    pub async fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.registration
            .io(Direction::Write, || self.write_now(&[IoSlice::new(buf)]))
            .await
    }

    /// Writes some of `bufs`, in order, in one system call (`writev`).
    pub async fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.registration
            .io(Direction::Write, || self.write_now(bufs))
            .await
    }

    /// Writes all of `buf`, waiting for room as often as needed.
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
    #[inline]
    pub fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        // Not through `try_write_vectored`: one write per echo goes through here, and the
        // slice around `buf` cost about 30 instructions per echo (measured).
        self.registration.try_io(Direction::Write, || {
            let n = send(&self.io, buf)?;
            self.sent(n, buf.len());
            Ok(n)
        })
    }

    /// Writes some of `bufs` without waiting: `WouldBlock` when there is no room.
    #[inline]
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.registration
            .try_io(Direction::Write, || self.write_now(bufs))
    }

    #[inline]
    fn write_now(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // The kernel refuses more than IOV_MAX slices in one call (EMSGSIZE); as std does,
        // send the first IOV_MAX and report a partial write.
        let bufs = &bufs[..bufs.len().min(IOV_MAX)];
        let n = match bufs {
            [one] => send(&self.io, one)?,
            _ => net::sendmsg(
                &self.io,
                bufs,
                &mut SendAncillaryBuffer::default(),
                SendFlags::NOSIGNAL,
            )?,
        };
        let asked = match bufs {
            [one] => one.len(),
            [a, b] => a.len() + b.len(),
            _ => bufs.iter().map(|b| b.len()).sum(),
        };
        self.sent(n, asked);
        Ok(n)
    }

    /// `n` of `asked` bytes went out.
    #[inline]
    fn sent(&self, n: usize, asked: usize) {
        if n > 0 {
            self.registration.heard();
        }
        if n < asked {
            // The send buffer is full; room freed later brings a new edge.
            self.registration.clear(Direction::Write);
        }
    }

    /// Shuts down the read side, the write side (sends FIN: the peer reads EOF once it
    /// has read everything written before), or both.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.io.shutdown(how)
    }

    /// The address of the peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// The local address of this end.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    /// Sets `TCP_NODELAY`: send small writes at once instead of waiting to batch them.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.io.set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.io.nodelay()
    }

    /// TCP keepalive: with `Some(idle)`, once the connection has been silent for `idle`
    /// the kernel probes the peer, and a peer that is gone (powered off, cut off) makes
    /// the connection fail with an error instead of staying open for good. `None` turns
    /// probing off (the default). The probes' interval and count are the system's
    /// (`net.ipv4.tcp_keepalive_intvl`, `_probes`).
    pub fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        let socket = socket2::SockRef::from(&self.io);
        match idle {
            Some(idle) => socket.set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(idle)),
            None => socket.set_keepalive(false),
        }
    }

    /// Whether TCP keepalive is on.
    pub fn keepalive(&self) -> io::Result<bool> {
        socket2::SockRef::from(&self.io).keepalive()
    }

    /// `SO_LINGER`: what closing the stream does with data not yet sent. `None` (the
    /// default): the close returns at once and the kernel sends the rest in the
    /// background. `Some(Duration::ZERO)`: the close discards it and *resets* the
    /// connection (the peer sees `ECONNRESET`), with no TIME_WAIT. A longer time makes
    /// the closing `drop` block the thread up to that long: avoid it on a runtime's
    /// thread.
    pub fn set_linger(&self, linger: Option<Duration>) -> io::Result<()> {
        socket2::SockRef::from(&self.io).set_linger(linger)
    }

    /// The `SO_LINGER` setting.
    pub fn linger(&self) -> io::Result<Option<Duration>> {
        socket2::SockRef::from(&self.io).linger()
    }

    /// Takes the socket's pending error (`SO_ERROR`), if any.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.take_error()
    }

    /// Gives up on a peer that makes no progress: once nothing has been read from the
    /// stream or written to it for `timeout` (between one and one and a quarter of it),
    /// the stream is *idle*, and every operation that would wait for it fails with
    /// [`ErrorKind::TimedOut`](io::ErrorKind::TimedOut) instead: `read`, `write`,
    /// `try_read` and `try_write` when they find nothing to do, and the readiness waits
    /// ([`readable`](Self::readable), [`poll_read_ready`](Self::poll_read_ready), ...)
    /// return at once, so that the next operation says so. Data that is there is still
    /// read, and room that is there still written.
    ///
    /// A stream stays idle until this is called again; `None` stops the clock, and a
    /// new timeout starts it afresh. Off by default.
    ///
    /// The runtime keeps the clock: an operation that moves bytes costs one store, and
    /// the clock one timer per quarter of the timeout, however busy the stream. (A
    /// [`timeout`](crate::time::timeout) around each read would set and drop a timer per
    /// read.)
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use coop::net::TcpListener;
    ///
    /// coop::block_on(async {
    ///     let listener = TcpListener::bind("127.0.0.1:25000")?;
    ///     let (stream, _) = listener.accept().await?;
    ///     stream.set_idle_timeout(Some(Duration::from_secs(300)));
    ///     let mut buf = [0; 1024];
    ///     match stream.read(&mut buf).await {
    ///         Err(e) if e.kind() == std::io::ErrorKind::TimedOut => println!("silent"),
    ///         other => println!("{other:?}"),
    ///     }
    ///     std::io::Result::Ok(())
    /// })
    /// .unwrap();
    /// ```
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.registration.set_idle_timeout(timeout);
    }
}

/// The most slices one `sendmsg` takes (Linux's `UIO_MAXIOV`, POSIX's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// `send`, without `SIGPIPE` when the peer is gone (an error instead, as std does).
#[inline]
fn send(io: &mio::net::TcpStream, buf: &[u8]) -> io::Result<usize> {
    Ok(net::send(io, buf, SendFlags::NOSIGNAL)?)
}

impl fmt::Debug for TcpStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.fmt(f)
    }
}
