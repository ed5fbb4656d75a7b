//! The floor: the `GOT:` echo server as one edge-triggered epoll loop on mio, with no
//! runtime, no tasks and no wakers. What any runtime can at best approach.
//!
//! Per echo it makes one `read` and one `write` and shares one `epoll_wait`: a short read
//! means the socket is drained, so it does not read again to hear `WouldBlock`. Like
//! coop-echo, it keeps a buffer for a connection only while the client is not taking its
//! replies, and reads nothing more from that client until they are out.
//!
//! `floor-echo [--host ADDR] [--port N] [--prefix TEXT]`; prints `Listening on ADDR`.

use std::io::{self, ErrorKind, Read, Write};
use std::net::ToSocketAddrs;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

#[path = "../../peer_args.rs"]
mod peer_args;

const LISTENER: Token = Token(usize::MAX);
const READ_SIZE: usize = 16 * 1024;

struct Connection {
    stream: TcpStream,
    /// Reply bytes the client has not taken yet.
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let (host, port, prefix) = peer_args::parse()?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::other("the address resolves to nothing"))?;
    let mut listener = TcpListener::bind(addr)?;
    eprintln!("Listening on {}", listener.local_addr()?);

    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut free = Vec::new();
    // The prefix sits in front of the read buffer: a reply is one write, no copy.
    let mut buf = vec![0; prefix.len() + READ_SIZE];
    buf[..prefix.len()].copy_from_slice(&prefix);

    loop {
        match poll.poll(&mut events, None) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            result => result?,
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept(&listener, &poll, &mut connections, &mut free)?;
                continue;
            }
            let i = event.token().0;
            let done = match connections.get_mut(i) {
                Some(Some(connection)) => serve(connection, &mut buf, prefix.len()),
                _ => false, // an event for a connection closed earlier in this batch
            };
            if done {
                connections[i] = None;
                free.push(i);
            }
        }
    }
}

fn accept(
    listener: &TcpListener,
    poll: &Poll,
    connections: &mut Vec<Option<Connection>>,
    free: &mut Vec<usize>,
) -> io::Result<()> {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => continue,
            // Out of descriptors: the floor does not try to be clever; it waits for the
            // next connection to knock.
            Err(_) => return Ok(()),
        };
        stream.set_nodelay(true)?;
        let i = free.pop().unwrap_or_else(|| {
            connections.push(None);
            connections.len() - 1
        });
        poll.registry().register(
            &mut stream,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        connections[i] = Some(Connection {
            stream,
            pending: Vec::new(),
        });
    }
}

/// Answers what the client sent; `true` when the connection is over.
fn serve(connection: &mut Connection, buf: &mut [u8], prefix: usize) -> bool {
    let Connection { stream, pending } = connection;
    if !pending.is_empty() {
        match stream.write(pending) {
            Ok(n) => {
                pending.drain(..n);
                if !pending.is_empty() {
                    return false;
                }
                *pending = Vec::new();
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
    loop {
        let n = match stream.read(&mut buf[prefix..]) {
            Ok(0) => return true,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        };
        let reply = &buf[..prefix + n];
        match stream.write(reply) {
            Ok(w) if w == reply.len() => {}
            Ok(w) => {
                pending.extend_from_slice(&reply[w..]);
                return false;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                pending.extend_from_slice(reply);
                return false;
            }
            Err(_) => return true,
        }
        if n < READ_SIZE {
            return false; // a short read drained the socket
        }
    }
}
