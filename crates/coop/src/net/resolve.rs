//! Addresses to connect to, and host names looked up off the runtime's thread.
//!
//! The system resolver (`getaddrinfo`) blocks, for seconds when a name server does not
//! answer. A host name is therefore looked up on the blocking pool
//! ([`spawn_blocking`](crate::spawn_blocking)) while the runtime's thread goes on; an
//! address written out (`"127.0.0.1:80"`, `"[::1]:80"`) is parsed, with no lookup.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// What [`TcpStream::connect`](super::TcpStream::connect) and
/// [`UdpSocket::connect`](super::UdpSocket::connect) take: a socket address, an
/// `(IP, port)` pair, a slice or array of addresses, or a host and port as
/// `"host:port"` or `("host", port)`.
///
/// A host name is looked up on the blocking pool, never on the runtime's thread; a
/// name that does not resolve is an error that names it. Sealed: it is implemented for
/// the types above (and references to them) only.
///
/// # Examples
///
/// ```no_run
/// use coop::net::TcpStream;
///
/// coop::block_on(async {
///     let by_address = TcpStream::connect("127.0.0.1:25000").await?;
///     let by_name = TcpStream::connect(("localhost", 25000)).await?;
///     std::io::Result::Ok(())
/// })
/// .unwrap();
/// ```
pub trait ToSocketAddrs: sealed::Sealed {}

pub(crate) mod sealed {
    use super::{SocketAddr, io};

    /// How to get the addresses: there already, or a name to look up.
    pub trait Sealed {
        #[doc(hidden)]
        fn lookup(&self) -> Lookup;
    }

    #[doc(hidden)]
    #[derive(Debug)]
    pub enum Lookup {
        Ready(io::Result<Vec<SocketAddr>>),
        Name(String, u16),
    }
}

use sealed::{Lookup, Sealed};

/// The addresses `addr` names, looked up off the thread if it is a host name.
pub(crate) async fn resolve<A: ToSocketAddrs + ?Sized>(addr: &A) -> io::Result<Vec<SocketAddr>> {
    let (host, port) = match addr.lookup() {
        Lookup::Ready(addrs) => return addrs,
        Lookup::Name(host, port) => (host, port),
    };
    let looked_up = crate::spawn_blocking({
        let host = host.clone();
        move || std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
    })
    .await
    .map_err(io::Error::from)?;
    match looked_up {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("cannot resolve {host}: no address"),
                ));
            }
            Ok(addrs)
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("cannot resolve {host}: {e}"),
        )),
    }
}

fn ready(addrs: impl IntoIterator<Item = SocketAddr>) -> Lookup {
    Lookup::Ready(Ok(addrs.into_iter().collect()))
}

/// `host` and `port`: parsed if `host` is an IP address, else a name to look up.
fn host_port(host: &str, port: u16) -> Lookup {
    // `[::1]`, as in a URL, too.
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    match bare.parse::<IpAddr>() {
        Ok(ip) => ready([SocketAddr::new(ip, port)]),
        Err(_) => Lookup::Name(host.to_owned(), port),
    }
}

/// `"host:port"`.
fn host_colon_port(s: &str) -> Lookup {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return ready([addr]);
    }
    let invalid = |what: &str| {
        Lookup::Ready(Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} in {s:?} (expected HOST:PORT)"),
        )))
    };
    let Some((host, port)) = s.rsplit_once(':') else {
        return invalid("no port");
    };
    let Ok(port) = port.parse::<u16>() else {
        return invalid("an invalid port");
    };
    if host.is_empty() {
        return invalid("no host");
    }
    host_port(host, port)
}

macro_rules! addresses {
    ($($ty:ty => |$me:ident| $lookup:expr;)*) => {$(
        impl Sealed for $ty {
            fn lookup(&self) -> Lookup {
                let $me = self;
                $lookup
            }
        }
        impl ToSocketAddrs for $ty {}
    )*};
}

addresses! {
    SocketAddr => |me| ready([*me]);
    SocketAddrV4 => |me| ready([SocketAddr::V4(*me)]);
    SocketAddrV6 => |me| ready([SocketAddr::V6(*me)]);
    (IpAddr, u16) => |me| ready([SocketAddr::new(me.0, me.1)]);
    (Ipv4Addr, u16) => |me| ready([SocketAddr::new(me.0.into(), me.1)]);
    (Ipv6Addr, u16) => |me| ready([SocketAddr::new(me.0.into(), me.1)]);
    [SocketAddr] => |me| ready(me.iter().copied());
    (&str, u16) => |me| host_port(me.0, me.1);
    (String, u16) => |me| host_port(&me.0, me.1);
    str => |me| host_colon_port(me);
    String => |me| host_colon_port(me);
}

impl<const N: usize> Sealed for [SocketAddr; N] {
    fn lookup(&self) -> Lookup {
        ready(self.iter().copied())
    }
}
impl<const N: usize> ToSocketAddrs for [SocketAddr; N] {}

impl<T: Sealed + ?Sized> Sealed for &T {
    fn lookup(&self) -> Lookup {
        (**self).lookup()
    }
}
impl<T: ToSocketAddrs + ?Sized> ToSocketAddrs for &T {}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(addr: impl ToSocketAddrs) -> Vec<SocketAddr> {
        match addr.lookup() {
            Lookup::Ready(addrs) => addrs.unwrap(),
            other => panic!("looked up: {other:?}"),
        }
    }

    #[test]
    fn addresses_written_out_are_parsed_without_a_lookup() {
        let v4: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let v6: SocketAddr = "[::1]:80".parse().unwrap();
        assert_eq!(parsed("127.0.0.1:80"), [v4]);
        assert_eq!(parsed(String::from("[::1]:80")), [v6]);
        assert_eq!(parsed(("127.0.0.1", 80)), [v4]);
        assert_eq!(parsed(("::1", 80)), [v6]);
        assert_eq!(parsed(("[::1]", 80)), [v6]);
        assert_eq!(parsed(&[v4, v6][..]), [v4, v6]);
        assert_eq!(parsed([v4]), [v4]);
        let by_ref: &SocketAddr = &v4;
        assert_eq!(parsed(by_ref), [v4]);
    }

    #[test]
    fn names_are_looked_up_and_bad_strings_refused() {
        assert!(matches!("localhost:80".lookup(), Lookup::Name(h, 80) if h == "localhost"));
        assert!(matches!(("example", 7).lookup(), Lookup::Name(h, 7) if h == "example"));
        for bad in ["localhost", "localhost:http", ":80", "host:65536"] {
            match bad.lookup() {
                Lookup::Ready(Err(e)) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad}");
                    assert!(e.to_string().contains(bad), "{e}");
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }
}
