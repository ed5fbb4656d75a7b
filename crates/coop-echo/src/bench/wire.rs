//! What a load connection talks over: a TCP stream, or TLS over one.
//!
//! The load's loop reads and writes without waiting and parks on the socket's readiness
//! (one turn per wake-up, whatever arrived), so TLS is driven here by rustls' own
//! non-blocking calls rather than through an `AsyncRead`: records in, plaintext out,
//! and back. The handshake, done once per connection before the load starts, goes
//! through futures-rustls.

use std::io::{self, IoSlice, Read, Write};

use coop::net::TcpStream;
use rustls::ClientConnection;

/// A connection's transport, as the load's loop drives it.
pub(super) trait Wire {
    /// Plaintext that has arrived; `Ok(0)` at the end, `WouldBlock` if none.
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Takes what it can of `bufs` without waiting; `WouldBlock` if nothing.
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// Bytes taken by a write are still waiting for room in the socket.
    fn queued(&self) -> bool {
        false
    }

    /// Gives the socket what is queued, as much as it takes.
    fn push(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// The socket, for its readiness.
    fn socket(&self) -> &TcpStream;
}

impl Wire for TcpStream {
    #[inline]
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::try_read(self, buf)
    }

    #[inline]
    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        TcpStream::try_write_vectored(self, bufs)
    }

    #[inline]
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// TLS over a TCP stream, the handshake done.
pub(super) struct TlsWire {
    pub(super) session: ClientConnection,
    pub(super) stream: TcpStream,
}

/// The socket as rustls wants it: `Read` and `Write` that never wait.
struct Socket<'a>(&'a TcpStream);

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Wire for TlsWire {
    fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.session.reader().read(buf) {
                // Ok(0): the server's close_notify.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext left: more records from the socket. `WouldBlock` here clears
            // the socket's readiness, so the loop parks until more arrive.
            if self.session.read_tls(&mut Socket(&self.stream))? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                ));
            }
            self.session
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // Records may call for an answer (a key update).
            self.push()?;
        }
    }

    fn try_write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        // Records queued first: plaintext taken now would only queue behind them, and a
        // server that does not read would have the load buffer without bound.
        self.push()?;
        if self.queued() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.session.writer().write_vectored(bufs)?;
        self.push()?;
        Ok(n)
    }

    fn queued(&self) -> bool {
        self.session.wants_write()
    }

    fn push(&mut self) -> io::Result<()> {
        while self.session.wants_write() {
            match self.session.write_tls(&mut Socket(&self.stream)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn socket(&self) -> &TcpStream {
        &self.stream
    }
}

impl Drop for TlsWire {
    /// Says goodbye with a `close_notify`, if the socket takes it now.
    fn drop(&mut self) {
        self.session.send_close_notify();
        let _ = self.push();
    }
}
