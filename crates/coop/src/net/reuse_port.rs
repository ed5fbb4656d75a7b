//! One port, several listening sockets: one for each thread's runtime, with the kernel
//! choosing a socket (so a thread) for each new connection or datagram.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use socket2::{Domain, Protocol, Socket, Type};

use super::each_addr;
use super::listener::BACKLOG;

/// Binds `n` TCP listening sockets (at least one) to `addr` with `SO_REUSEPORT`, for
/// `n` threads to accept on: the kernel hashes each new connection's addresses and ports
/// to one of them, so connections spread evenly and each thread accepts its own, with
/// no lock between them. Wrap each with [`TcpListener::from_std`](super::TcpListener::from_std)
/// on its thread.
///
/// Port 0 picks a free port for all of them. A port that another socket listens on
/// already fails with `AddrInUse`, even if that socket has `SO_REUSEPORT` too (a second
/// copy of the same server would otherwise take half of the first one's clients
/// silently). Each socket also has `SO_REUSEADDR` and a backlog of 4096, as
/// [`TcpListener::bind`](super::TcpListener::bind) gives. With `n` = 1 there is nothing
/// to share, and the one socket goes without `SO_REUSEPORT`: nobody can join it later.
///
/// # Examples
///
/// ```
/// let listeners = coop::net::bind_reuse_port("127.0.0.1:0", 2)?;
/// let port = listeners[0].local_addr()?.port();
/// assert_eq!(listeners[1].local_addr()?.port(), port);
/// # std::io::Result::Ok(())
/// ```
pub fn bind_reuse_port<A: ToSocketAddrs>(
    addr: A,
    n: usize,
) -> io::Result<Vec<std::net::TcpListener>> {
    each_addr(addr, |addr| {
        group(addr, n, Type::STREAM, Protocol::TCP, |socket| {
            socket.listen(BACKLOG)
        })
    })
    .map(|sockets| sockets.into_iter().map(Into::into).collect())
}

/// [`bind_reuse_port`] for UDP: `n` sockets on one port, each datagram delivered to one
/// of them by a hash of its source (so one client's datagrams all go to one socket).
/// With `n` = 1, one plain socket.
/// Wrap each with [`UdpSocket::from_std`](super::UdpSocket::from_std) on its thread.
pub fn bind_udp_reuse_port<A: ToSocketAddrs>(
    addr: A,
    n: usize,
) -> io::Result<Vec<std::net::UdpSocket>> {
    each_addr(addr, |addr| {
        group(addr, n, Type::DGRAM, Protocol::UDP, |_| Ok(()))
    })
    .map(|sockets| sockets.into_iter().map(Into::into).collect())
}

fn group(
    addr: SocketAddr,
    n: usize,
    kind: Type,
    protocol: Protocol,
    ready: impl Fn(&Socket) -> io::Result<()>,
) -> io::Result<Vec<Socket>> {
    let socket = |addr: SocketAddr, reuse_port: bool| -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
        // TCP: ride over TIME_WAIT on a restart. Not UDP, where it would let the probe
        // share the port with another process's socket.
        if kind == Type::STREAM {
            socket.set_reuse_address(true)?;
        }
        rustix::net::sockopt::set_socket_reuseport(&socket, reuse_port)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        Ok(socket)
    };
    let n = n.max(1);
    if n == 1 {
        let socket = socket(addr, false)?;
        ready(&socket)?;
        return Ok(vec![socket]);
    }
    let mut addr = addr;
    if addr.port() != 0 {
        // Without SO_REUSEPORT, binding fails if anyone holds the port, reusing or not;
        // the socket goes at once, and the group takes its place.
        let probe = socket(addr, false)?;
        if kind == Type::STREAM {
            probe.listen(1)?;
        }
        drop(probe);
    }
    let mut sockets = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = socket(addr, true)?;
        ready(&socket)?;
        // Port 0: the first socket picked it, and the others join it there.
        addr = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::other("bound to a non-IP address"))?;
        sockets.push(socket);
    }
    Ok(sockets)
}
