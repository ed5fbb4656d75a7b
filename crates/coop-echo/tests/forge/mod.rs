//! Datagrams with forged source addresses on 127/8, from one plain UDP socket: no raw
//! socket, no root. Linux routes all of 127.0.0.0/8 to the loopback interface as local
//! addresses, and `sendmsg` with an `IP_PKTINFO` control message picks the source address
//! of one datagram (`ipi_spec_dst`), which may be any of them. The source port is the
//! socket's own; nothing listens on the forged addresses, so replies to them are dropped
//! (with an ICMP port unreachable, which the server ignores, as it would for a forged
//! source on the Internet). Linux only, as is binding 127.x.y.z.

use std::io::{self, IoSlice};
use std::net::{Ipv4Addr, SocketAddr};

use socket2::{Domain, MsgHdr, Protocol, SockAddr, Socket, Type};

/// `IPPROTO_IP` (`SOL_IP`), the level of `IP_PKTINFO`.
const SOL_IP: i32 = 0;
/// `IP_PKTINFO` (linux/in.h).
const IP_PKTINFO: i32 = 8;

/// The `n`th forged source: 127.1.0.0 + `n` (127.1.0.0 to 127.2.134.159 for the first
/// 100,000; genuine clients of a test bind 127.9.0.x, out of the way).
pub fn forged_source(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 1, 0, 0)) + n)
}

/// Sends datagrams to one address, each from a source of the caller's choosing on 127/8.
pub struct Forger {
    socket: Socket,
    to: SockAddr,
    /// The control message: a `cmsghdr` and an `in_pktinfo`, whose `ipi_spec_dst` (at
    /// `source_at`) is rewritten for each datagram.
    control: Vec<u8>,
    source_at: usize,
}

impl Forger {
    /// A socket on 127.0.0.1 (an ephemeral port) that sends to `to`.
    pub fn new(to: SocketAddr) -> io::Result<Forger> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())?;
        // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; }, padded to
        // a size_t; then struct in_pktinfo { int ipi_ifindex; struct in_addr
        // ipi_spec_dst; struct in_addr ipi_addr; }, padded the same (CMSG_SPACE).
        let word = size_of::<usize>();
        let align = |n: usize| n.div_ceil(word) * word;
        let header = align(word + 8);
        let pktinfo = 12;
        let mut control = Vec::with_capacity(header + align(pktinfo));
        control.extend_from_slice(&(header + pktinfo).to_ne_bytes());
        control.extend_from_slice(&SOL_IP.to_ne_bytes());
        control.extend_from_slice(&IP_PKTINFO.to_ne_bytes());
        control.resize(header, 0);
        control.extend_from_slice(&0i32.to_ne_bytes()); // any interface
        let source_at = control.len();
        control.resize(header + align(pktinfo), 0);
        Ok(Forger {
            socket,
            to: to.into(),
            control,
            source_at,
        })
    }

    /// Sends `payload` as if from `source` (on 127/8).
    pub fn send_from(&mut self, source: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        self.control[self.source_at..self.source_at + 4].copy_from_slice(&source.octets());
        let buffers = [IoSlice::new(payload)];
        let message = MsgHdr::new()
            .with_addr(&self.to)
            .with_buffers(&buffers)
            .with_control(&self.control);
        self.socket.sendmsg(&message, 0)?;
        Ok(())
    }
}

/// Datagrams the kernel dropped for the UDP sockets on `port` (their receive queues were
/// full): the last column of `/proc/net/udp`.
pub fn kernel_drops(port: u16) -> u64 {
    let port = format!(":{port:04X}");
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.get(1).is_some_and(|local| local.ends_with(&port)))
        .filter_map(|cols| cols.last()?.parse::<u64>().ok())
        .sum()
}
