//! TCP, UDP and Unix sockets whose operations park the task instead of blocking the
//! thread.
//!
//! Each operation is tried at once; only when the OS answers `WouldBlock` does the task
//! wait, in the socket's read or write waiting area (the seed's `yield 'recv', sock` and
//! `yield 'send', sock`). [`TcpStream::readable`] and [`TcpStream::writable`] are those
//! two yields, one to one, for code that wants to do its own non-blocking I/O with
//! [`TcpStream::try_read`] and [`TcpStream::try_write`].

mod io_traits;
mod listener;
mod registration;
mod resolve;
mod reuse_port;
mod stream;
mod udp;
mod unix;

pub(crate) use registration::Registration;

pub use listener::TcpListener;
pub use resolve::ToSocketAddrs;
pub use reuse_port::{bind_reuse_port, bind_udp_reuse_port};
pub use stream::TcpStream;
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream};

use std::io;
use std::net::{SocketAddr, ToSocketAddrs as StdToSocketAddrs};

/// Tries `op` on each address `addr` resolves to, returning the first success or the last
/// error.
fn each_addr<A: StdToSocketAddrs, T>(
    addr: A,
    mut op: impl FnMut(SocketAddr) -> io::Result<T>,
) -> io::Result<T> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        match op(addr) {
            Ok(value) => return Ok(value),
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
