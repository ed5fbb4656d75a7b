//! `coop-echo serve`: the seed's `echo_handler`, for every client, on one thread.

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::rc::Rc;

use coop::net::{TcpListener, TcpStream};

use crate::echo::{CHUNK_SLICES, Encoder, Framing, MAX_SLICES};

/// Bytes one read may take from a client. Reads land in one buffer that all connections
/// share; a connection copies out only what its client is not yet accepting back.
const READ_SIZE: usize = 16 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// What every connection's handler needs to know.
#[derive(Debug)]
pub struct Settings {
    /// Bytes put in front of each reply.
    pub prefix: Rc<[u8]>,
    /// Where the prefix goes.
    pub framing: Framing,
    /// No `Connection from` / `Connection closed` lines.
    pub quiet: bool,
}

/// Serves `listener` forever.
pub async fn run(listener: TcpListener, settings: Settings) {
    let settings = Rc::new(settings);
    coop::serve(listener, move |stream, peer| {
        handle(stream, peer, Rc::clone(&settings))
    })
    .await;
}

/// Bytes a connection read and wrote, for its closing line.
#[derive(Default, Debug)]
struct Counts {
    bytes_in: u64,
    bytes_out: u64,
}

async fn handle(stream: TcpStream, peer: SocketAddr, settings: Rc<Settings>) {
    if !settings.quiet {
        tracing::info!("Connection from {peer}");
    }
    // Replies go out as soon as they are written: Nagle's algorithm would hold a reply
    // back while an earlier one is unacknowledged, which stalls pipelined clients.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("TCP_NODELAY on {peer}: {e}");
    }
    let mut encoder = Encoder::new(Rc::clone(&settings.prefix), settings.framing);
    let mut counts = Counts::default();
    let outcome = echo(&stream, &mut encoder, &mut counts).await;
    if !settings.quiet {
        let Counts {
            bytes_in,
            bytes_out,
        } = counts;
        match outcome {
            Ok(()) => tracing::info!(
                "Connection closed {peer} ({bytes_in} bytes in, {bytes_out} bytes out)"
            ),
            Err(e) => tracing::info!(
                "Connection closed {peer}: {e} ({bytes_in} bytes in, {bytes_out} bytes out)"
            ),
        }
    }
}

/// What one turn of reading and answering came to.
enum Turn {
    /// Everything read is answered; read again.
    Answered,
    /// Nothing to read after all.
    NothingRead,
    /// The client stopped accepting: the unanswered input is in `pending`.
    Blocked,
    /// The client closed its side.
    Eof,
}

/// Answers everything the client sends, until it closes its side; then closes ours.
///
/// The client's input is read only once all earlier input is answered, so a client that
/// sends without reading stalls itself, not the server's memory.
async fn echo(stream: &TcpStream, encoder: &mut Encoder, counts: &mut Counts) -> io::Result<()> {
    let mut pending = Vec::new();
    loop {
        stream.readable().await?;
        let turn = SCRATCH.with_borrow_mut(|scratch| {
            let n = match stream.try_read(scratch) {
                Ok(0) => return Ok(Turn::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Turn::NothingRead),
                Err(e) => return Err(e),
            };
            counts.bytes_in += n as u64;
            encoder.begin_chunk();
            let input = &scratch[..n];
            let answered = answer_now(stream, encoder, input, counts)?;
            if answered < n {
                pending.extend_from_slice(&input[answered..]);
                return Ok(Turn::Blocked);
            }
            Ok(Turn::Answered)
        })?;
        match turn {
            Turn::Answered | Turn::NothingRead => {}
            Turn::Blocked => answer_pending(stream, encoder, &mut pending, counts).await?,
            Turn::Eof => break,
        }
    }
    // Everything is answered: say so with a FIN. The client may have closed already.
    match stream.shutdown(Shutdown::Write) {
        Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
        _ => Ok(()),
    }
}

/// Writes as much of the reply to `input` as the socket takes without waiting; returns how
/// many input bytes that answered.
#[inline]
fn answer_now(
    stream: &TcpStream,
    encoder: &mut Encoder,
    input: &[u8],
    counts: &mut Counts,
) -> io::Result<usize> {
    if encoder.framing() == Framing::Chunk {
        // Two slices are all chunk framing fills (initialising 64 per message would cost
        // more than the rest of the reply), and one write nearly always takes them.
        let mut slices = [IoSlice::new(&[]); CHUNK_SLICES];
        let filled = encoder.slices(input, &mut slices);
        let written = match stream.try_write_vectored(&slices[..filled]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        counts.bytes_out += written as u64;
        let answered = encoder.advance(input, written);
        if answered == input.len() {
            return Ok(answered);
        }
        return Ok(
            answered + answer_in::<CHUNK_SLICES>(stream, encoder, &input[answered..], counts)?
        );
    }
    answer_in::<MAX_SLICES>(stream, encoder, input, counts)
}

#[inline(never)]
fn answer_in<const SLICES: usize>(
    stream: &TcpStream,
    encoder: &mut Encoder,
    input: &[u8],
    counts: &mut Counts,
) -> io::Result<usize> {
    let mut answered = 0;
    while answered < input.len() {
        let rest = &input[answered..];
        let mut slices = [IoSlice::new(&[]); SLICES];
        let filled = encoder.slices(rest, &mut slices);
        match stream.try_write_vectored(&slices[..filled]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => {
                counts.bytes_out += written as u64;
                answered += encoder.advance(rest, written);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(answered)
}

/// Waits for the client to accept the rest of the reply, then lets the buffer go.
async fn answer_pending(
    stream: &TcpStream,
    encoder: &mut Encoder,
    pending: &mut Vec<u8>,
    counts: &mut Counts,
) -> io::Result<()> {
    let mut answered = 0;
    while answered < pending.len() {
        stream.writable().await?;
        answered += answer_now(stream, encoder, &pending[answered..], counts)?;
    }
    // Nothing in flight: keep no buffer for a connection that may now idle for hours.
    *pending = Vec::new();
    Ok(())
}
