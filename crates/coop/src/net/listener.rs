use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::task::{Context, Poll};

use socket2::{Domain, Protocol, Socket, Type};

use super::Registration;
use super::{TcpStream, each_addr};
use crate::reactor::Direction;

/// Connections a listener queues before `accept` takes them. The seed's 5 drops clients
/// as soon as a few connect at once; the kernel caps this at `net.core.somaxconn`.
pub(super) const BACKLOG: i32 = 4096;

/// A listening TCP socket.
///
/// # Examples
///
/// ```
/// use coop::net::TcpListener;
///
/// coop::block_on(async {
///     let listener = TcpListener::bind("127.0.0.1:0")?;
///     println!("Listening on {}", listener.local_addr()?);
///     std::io::Result::Ok(())
/// })
/// .unwrap();
/// ```
pub struct TcpListener {
    // Field order is drop order: out of the reactor's table, then closed.
    pub(super) registration: Registration,
    pub(super) io: mio::net::TcpListener,
}

impl TcpListener {
    /// Binds to `addr` (the first address it resolves to that binds) with `SO_REUSEADDR`,
    /// so a restarted server gets its port back while old connections linger in
    /// TIME_WAIT, and listens with a backlog of 4096.
    ///
    /// Port 0 picks a free port: [`local_addr`](Self::local_addr) tells which.
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<TcpListener> {
        let std = each_addr(addr, |addr| {
            let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
            socket.set_reuse_address(true)?;
            socket.set_nonblocking(true)?;
            socket.bind(&addr.into())?;
            socket.listen(BACKLOG)?;
            Ok(std::net::TcpListener::from(socket))
        })?;
        TcpListener::from_std(std)
    }

    /// Wraps a bound standard-library listener (it is switched to non-blocking).
    pub fn from_std(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        listener.set_nonblocking(true)?;
        let io = mio::net::TcpListener::from_std(listener);
        let registration = Registration::new(io.as_fd(), io.as_raw_fd())?;
        Ok(TcpListener { registration, io })
    }

    /// Waits for a client and returns its connection: the seed's `yield 'recv', sock`
    /// followed by `sock.accept()`.
    ///
    /// Errors are those of `accept(2)`; [`serve`](crate::serve) shows which of them a
    /// server should ride out. Cancel safe: dropped before it is ready, it took no
    /// client. Several tasks may accept on one listener at once.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = self
            .registration
            .io(Direction::Read, || self.io.accept())
            .await?;
        Ok((TcpStream::new(stream)?, peer))
    }

    /// The poll behind [`accept`](Self::accept), for hand-written futures that wait on
    /// several things at once. Only the most recent caller waits: for several accepting
    /// tasks, use [`accept`](Self::accept).
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        self.registration
            .poll_io(Direction::Read, cx, || self.io.accept())
            .map(|accepted| {
                let (stream, peer) = accepted?;
                Ok((TcpStream::new(stream)?, peer))
            })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

impl fmt::Debug for TcpListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.fmt(f)
    }
}
