use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};

use super::Registration;
use super::each_addr;
use super::resolve::{ToSocketAddrs as ConnectAddrs, resolve};
use crate::reactor::Direction;

/// A UDP socket, registered with the runtime that created it.
///
/// # Examples
///
/// ```
/// use coop::net::UdpSocket;
///
/// coop::block_on(async {
///     let server = UdpSocket::bind("127.0.0.1:0")?;
///     let client = UdpSocket::bind("127.0.0.1:0")?;
///     client.send_to(b"ping", server.local_addr()?).await?;
///     let mut buf = [0; 16];
///     let (n, from) = server.recv_from(&mut buf).await?;
///     assert_eq!(&buf[..n], b"ping");
///     assert_eq!(from, client.local_addr()?);
///     std::io::Result::Ok(())
/// })
/// .unwrap();
/// ```
pub struct UdpSocket {
    // Field order is drop order: out of the reactor's table, then closed.
    pub(super) registration: Registration,
    pub(super) io: mio::net::UdpSocket,
}

impl UdpSocket {
    /// Binds to `addr` (the first address it resolves to that binds).
    pub fn bind<A: ToSocketAddrs>(addr: A) -> io::Result<UdpSocket> {
        UdpSocket::from_std(each_addr(addr, std::net::UdpSocket::bind)?)
    }

    /// Wraps a bound standard-library socket (it is switched to non-blocking).
    pub fn from_std(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        let io = mio::net::UdpSocket::from_std(socket);
        let registration = Registration::new(io.as_fd(), io.as_raw_fd())?;
        Ok(UdpSocket { registration, io })
    }

    /// Waits for a datagram; returns its length (cut to `buf`'s) and its sender.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.registration
            .io(Direction::Read, || self.io.recv_from(buf))
            .await
    }

    /// Receives a datagram without waiting: `WouldBlock` when none is queued.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.registration
            .try_io(Direction::Read, || self.io.recv_from(buf))
    }

    /// Sends `buf` as one datagram to `target`, waiting for room if there is none.
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.registration
            .io(Direction::Write, || self.io.send_to(buf, target))
            .await
    }

    /// Sends without waiting: `WouldBlock` when there is no room.
    pub fn try_send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.registration
            .try_io(Direction::Write, || self.io.send_to(buf, target))
    }

    /// Connects the socket to `addr` (the first address it resolves to that connects;
    /// a host name is looked up off the runtime's thread, as for
    /// [`TcpStream::connect`](super::TcpStream::connect)): from then on
    /// [`send`](Self::send) goes there, and [`recv`](Self::recv) receives only what
    /// comes from there (the kernel drops the rest). Connecting again replaces it.
    pub async fn connect<A: ConnectAddrs>(&self, addr: A) -> io::Result<()> {
        let mut last = None;
        for addr in resolve(&addr).await? {
            match self.io.connect(addr) {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::from(io::ErrorKind::InvalidInput)))
    }

    /// Sends `buf` as one datagram to the connected peer, waiting for room if there is
    /// none. Fails if the socket is not [connected](Self::connect).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.registration
            .io(Direction::Write, || self.io.send(buf))
            .await
    }

    /// [`send`](Self::send) without waiting: `WouldBlock` when there is no room.
    pub fn try_send(&self, buf: &[u8]) -> io::Result<usize> {
        self.registration
            .try_io(Direction::Write, || self.io.send(buf))
    }

    /// Waits for a datagram from the connected peer; returns its length (cut to
    /// `buf`'s). An error the peer's host reported (`ECONNREFUSED`: nothing listens
    /// there) comes back here.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.registration
            .io(Direction::Read, || self.io.recv(buf))
            .await
    }

    /// [`recv`](Self::recv) without waiting: `WouldBlock` when none is queued.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.registration
            .try_io(Direction::Read, || self.io.recv(buf))
    }

    /// The connected peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.io.fmt(f)
    }
}
