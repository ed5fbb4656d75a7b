//! A TLS connection of the echo, driven by hand through rustls' unbuffered API, so that
//! what it holds is ours to bound.
//!
//! rustls' buffered connection keeps, for each connection, a receive buffer that grows to
//! a whole record (18 KiB) and stays that size, a copy of each record's plaintext until it
//! is read, and the encrypted replies until they are sent (64 KiB by default): a client
//! that sends and never reads kept 82 KiB of ours. Here the TLS bytes are read into the
//! thread's buffer, and a record's reply is encrypted into another of the thread's and
//! written at once. A connection keeps buffers of its own only while something waits,
//! each the exact size of what waits:
//!
//! - `incoming`: TLS bytes read and not yet processed (a record cut by the read);
//! - `unanswered`: a record's plaintext whose reply the client is not yet taking;
//! - `outgoing`: TLS bytes made and not yet written.
//!
//! Reading stops while a reply waits, and a read takes at most one record's room, so the
//! three together hold at most one record's worth (18 KiB) and a record made of the
//! reply: what a client that sends and never reads costs, beside the connection itself.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;

use coop::net::TcpStream;
use rustls::server::{ServerConfig, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
    WriteTraffic,
};

use crate::echo::Encoder;
use crate::serve::{self, Counts, Totals};

/// The largest TLS record on the wire: 16 KiB of payload, the most a cipher may add
/// (2 KiB, TLS 1.2's allowance), and the header.
const RECORD_ROOM: usize = 16 * 1024 + 2048 + 5;

/// Reply bytes per record: TLS' most.
const RECORD_PAYLOAD: usize = 16 * 1024;

/// What a record adds to its payload in the ciphers offered (a header, a content type, a
/// nonce, a tag), with room to spare; a record that needs more is made in a bigger buffer.
const RECORD_OVERHEAD: usize = 64;

/// The buffers every TLS connection of a thread works in.
struct Scratch {
    /// TLS bytes as read, then processed in place.
    incoming: Box<[u8]>,
    /// A record's plaintext, as rustls gives it.
    plain: Vec<u8>,
    /// The reply to it, rendered.
    rendered: Vec<u8>,
    /// The reply, encrypted.
    outgoing: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        incoming: vec![0; RECORD_ROOM].into_boxed_slice(),
        plain: Vec::new(),
        rendered: Vec::new(),
        outgoing: vec![0; RECORD_PAYLOAD + RECORD_OVERHEAD],
    });
}

/// Where a connection goes next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// The handshake is done (said once, before any reply).
    Handshaken,
    /// It waits for the client's bytes: everything read is answered.
    Read,
    /// It waits for room in the socket for what it has made.
    Write,
    /// The client is done sending (a `close_notify`, or the end of the stream), and
    /// everything it sent is answered.
    Ended,
}

/// What answers the client's bytes, and counts them.
pub(crate) struct Replies<'a> {
    pub encoder: &'a mut Encoder,
    pub counts: &'a mut Counts,
    pub totals: &'a Totals,
}

/// One client's TLS connection, from the first byte of its handshake.
pub(crate) struct TlsConn {
    conn: UnbufferedServerConnection,
    handshaking: bool,
    incoming: Vec<u8>,
    unanswered: Vec<u8>,
    outgoing: Vec<u8>,
}

/// What to do with a state rustls reached, once it is let go.
enum Then {
    /// A record's plaintext is in the scratch's `plain`.
    Answer,
    Flush,
    Process,
    Read,
    Ended,
}

impl TlsConn {
    /// A connection whose client has sent `first` already (what followed a PROXY header).
    pub(crate) fn new(config: Arc<ServerConfig>, first: Vec<u8>) -> io::Result<TlsConn> {
        Ok(TlsConn {
            conn: UnbufferedServerConnection::new(config).map_err(invalid)?,
            handshaking: true,
            incoming: first,
            unanswered: Vec::new(),
            outgoing: Vec::new(),
        })
    }

    /// The TLS version spoken, once the handshake is done.
    pub(crate) fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Does what can be done without waiting: writes what waits, answers what was read,
    /// reads once (so that a busy client has its turn and lets the others have theirs),
    /// and says what the connection waits for. A failure of the client's TLS is
    /// `InvalidData` carrying rustls' error (its alert is sent first, if the socket
    /// takes it); an idle client is `TimedOut`, from the read or the write that found it.
    pub(crate) fn step(&mut self, stream: &TcpStream, replies: &mut Replies) -> io::Result<Step> {
        SCRATCH.with_borrow_mut(|scratch| self.step_in(stream, replies, scratch))
    }

    fn step_in(
        &mut self,
        stream: &TcpStream,
        replies: &mut Replies,
        scratch: &mut Scratch,
    ) -> io::Result<Step> {
        // What waits goes first, in order: the bytes made, then the reply to the bytes read.
        if !self.flush(stream)? {
            return Ok(Step::Write);
        }
        if !self.unanswered.is_empty() {
            let unanswered = std::mem::take(&mut self.unanswered);
            let answered = self.answer(
                stream,
                &unanswered,
                replies,
                &mut scratch.rendered,
                &mut scratch.outgoing,
            )?;
            if answered < unanswered.len() {
                self.unanswered = unanswered[answered..].to_vec();
                return Ok(Step::Write);
            }
        }
        let Scratch {
            incoming,
            plain,
            rendered,
            outgoing,
        } = scratch;
        let mut end = self.incoming.len();
        incoming[..end].copy_from_slice(&self.incoming);
        self.incoming = Vec::new();
        let mut start = 0;
        let mut read = false;
        loop {
            if self.handshaking && !self.conn.is_handshaking() {
                self.handshaking = false;
                self.keep(&incoming[start..end]);
                return Ok(Step::Handshaken);
            }
            let UnbufferedStatus { mut discard, state } =
                self.conn.process_tls_records(&mut incoming[start..end]);
            let then = match state {
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    plain.clear();
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(invalid)?;
                        discard += record.discard;
                        plain.extend_from_slice(record.payload);
                    }
                    Then::Answer
                }
                Ok(ConnectionState::EncodeTlsData(mut message)) => {
                    encode(&mut self.outgoing, |buf| message.encode(buf))?;
                    Then::Process
                }
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    // Said before the bytes leave: they wait in `outgoing` until they have.
                    sent.done();
                    Then::Flush
                }
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                    Then::Read
                }
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => Then::Ended,
                Ok(other) => {
                    return Err(io::Error::other(format!("unexpected TLS state {other:?}")));
                }
                Err(e) => {
                    self.send_alert(stream);
                    return Err(invalid(e));
                }
            };
            start += discard;
            match then {
                Then::Answer => {
                    let len = plain.len();
                    serve::took_chunk(len, replies.counts, replies.totals, replies.encoder);
                    let answered = self.answer(stream, plain, replies, rendered, outgoing)?;
                    if answered < len {
                        self.unanswered = plain[answered..].to_vec();
                        self.keep(&incoming[start..end]);
                        return Ok(Step::Write);
                    }
                }
                Then::Flush => {
                    if !self.flush(stream)? {
                        self.keep(&incoming[start..end]);
                        return Ok(Step::Write);
                    }
                }
                Then::Process => {}
                Then::Read if read => {
                    self.keep(&incoming[start..end]);
                    return Ok(Step::Read);
                }
                Then::Read => {
                    read = true;
                    incoming.copy_within(start..end, 0);
                    end -= start;
                    start = 0;
                    if end == incoming.len() {
                        return Err(invalid(rustls::Error::General(
                            "a handshake message larger than this server takes".into(),
                        )));
                    }
                    match stream.try_read(&mut incoming[end..]) {
                        // The end of the stream: as good as a close_notify for an echo,
                        // whose client knows from the replies what got through.
                        Ok(0) => return Ok(Step::Ended),
                        Ok(n) => end += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.keep(&incoming[..end]);
                            return Ok(Step::Read);
                        }
                        Err(e) => return Err(e),
                    }
                }
                Then::Ended => return Ok(Step::Ended),
            }
        }
    }

    /// Keeps TLS bytes that wait to be processed, in a buffer of their own.
    fn keep(&mut self, incoming: &[u8]) {
        if !incoming.is_empty() {
            self.incoming = incoming.to_vec();
        }
    }

    /// Encrypts and writes the reply to `input` until it is all out or the socket is full
    /// (the rest of the record made is kept in `outgoing`); returns how many bytes of
    /// `input` it answered.
    fn answer(
        &mut self,
        stream: &TcpStream,
        input: &[u8],
        replies: &mut Replies,
        rendered: &mut Vec<u8>,
        outgoing: &mut Vec<u8>,
    ) -> io::Result<usize> {
        let mut answered = 0;
        while answered < input.len() {
            let rest = &input[answered..];
            rendered.clear();
            replies.encoder.render(rest, rendered, RECORD_PAYLOAD);
            let piece = &rendered[..rendered.len().min(RECORD_PAYLOAD)];
            let Some(made) = self.encrypt(stream, piece, outgoing)? else {
                return Ok(answered);
            };
            answered += replies.encoder.advance(rest, piece.len());
            replies.counts.bytes_out += piece.len() as u64;
            Totals::add(&replies.totals.bytes_out, piece.len() as u64);
            let written = match stream.try_write(&outgoing[..made]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if written < made {
                self.outgoing.extend_from_slice(&outgoing[written..made]);
                return Ok(answered);
            }
        }
        Ok(answered)
    }

    /// Encrypts `piece` into `outgoing` (grown if it must be); returns the length of the
    /// record(s) made, or `None` if the socket must first take what rustls had to send.
    fn encrypt(
        &mut self,
        stream: &TcpStream,
        piece: &[u8],
        outgoing: &mut Vec<u8>,
    ) -> io::Result<Option<usize>> {
        self.with_traffic(stream, |traffic| {
            match traffic.encrypt(piece, outgoing) {
                Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                    outgoing.resize(required_size, 0);
                    traffic.encrypt(piece, outgoing)
                }
                made => made,
            }
            .map_err(invalid)
        })
    }

    /// Calls `f` with the means to encrypt, once the messages of the protocol's own that
    /// rustls has queued (a key update, a ticket) are out; `None` if the socket must
    /// first take them.
    fn with_traffic<R>(
        &mut self,
        stream: &TcpStream,
        f: impl FnOnce(&mut WriteTraffic<'_, ServerConnectionData>) -> io::Result<R>,
    ) -> io::Result<Option<R>> {
        loop {
            match self.conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => return f(&mut traffic).map(Some),
                Ok(ConnectionState::EncodeTlsData(mut message)) => {
                    encode(&mut self.outgoing, |buf| message.encode(buf))?;
                }
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    sent.done();
                    if !self.flush(stream)? {
                        return Ok(None);
                    }
                }
                Ok(other) => {
                    return Err(io::Error::other(format!(
                        "TLS state {other:?} where a reply was to be sent"
                    )));
                }
                Err(e) => return Err(invalid(e)),
            }
        }
    }

    /// Writes what waits in `outgoing`; `true` once it is all out.
    fn flush(&mut self, stream: &TcpStream) -> io::Result<bool> {
        while !self.outgoing.is_empty() {
            match stream.try_write(&self.outgoing) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => drop(self.outgoing.drain(..n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        // Nothing waits: keep no buffer for a connection that may now idle for hours.
        self.outgoing = Vec::new();
        Ok(true)
    }

    /// After a failure of the client's TLS: sends the alert rustls made for it, if the
    /// socket takes it now (the connection ends either way).
    fn send_alert(&mut self, stream: &TcpStream) {
        loop {
            match self.conn.process_tls_records(&mut []).state {
                Ok(ConnectionState::EncodeTlsData(mut message)) => {
                    if encode(&mut self.outgoing, |buf| message.encode(buf)).is_err() {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(sent)) => sent.done(),
                _ => break,
            }
        }
        let _ = self.flush(stream);
    }

    /// Says `close_notify` and writes it, with anything else that waits; then the FIN.
    /// The client may have closed already.
    pub(crate) async fn close(&mut self, stream: &TcpStream) -> io::Result<()> {
        let closed = async {
            loop {
                let mut notify = Vec::new();
                let queued = self.with_traffic(stream, |traffic| {
                    encode(&mut notify, |buf| {
                        traffic.queue_close_notify(buf).map_err(|e| match e {
                            EncryptError::InsufficientSize(size) => {
                                EncodeError::InsufficientSize(size)
                            }
                            _ => EncodeError::AlreadyEncoded,
                        })
                    })
                })?;
                if queued.is_some() {
                    self.outgoing.extend_from_slice(&notify);
                    break;
                }
                stream.writable().await?;
            }
            while !self.flush(stream)? {
                stream.writable().await?;
            }
            stream.shutdown(std::net::Shutdown::Write)
        };
        match closed.await {
            Err(e)
                if e.kind() != io::ErrorKind::NotConnected
                    && e.kind() != io::ErrorKind::BrokenPipe =>
            {
                Err(e)
            }
            _ => Ok(()),
        }
    }
}

/// Appends a message rustls makes with `make` (which says how much room it needs when it
/// has too little) to `outgoing`.
fn encode(
    outgoing: &mut Vec<u8>,
    mut make: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>,
) -> io::Result<()> {
    let at = outgoing.len();
    let need = match make(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            required_size
        }
        Err(e) => return Err(invalid(e)),
    };
    outgoing.resize(at + need, 0);
    let made = make(&mut outgoing[at..]).map_err(invalid)?;
    outgoing.truncate(at + made);
    Ok(())
}

/// A failure of the client's TLS, as the buffered API says it (and as the handshake's
/// log line reads it).
fn invalid<E: std::error::Error + Send + Sync + 'static>(e: E) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
