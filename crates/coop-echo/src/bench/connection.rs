//! One connection of the load: it sends, checks every reply and times it, until its
//! share of the load is done.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use super::load::Load;
use super::report::Tally;
use super::verify::Verifier;
use super::wire::Wire;
use crate::echo::Framing;

/// Bytes one read may take; the reads of all connections share one buffer.
const READ_SIZE: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SIZE].into_boxed_slice());
}

/// One connection: sends, verifies, records, until its share of the load is done.
pub(super) async fn drive(id: usize, mut wire: impl Wire, load: Rc<Load>) {
    if let Err(e) = exchange(id, &mut wire, &load).await {
        let mut tally = load.tally.borrow_mut();
        tally.errors += 1;
        match e.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                tally.faults.reset += 1;
            }
            // EOF on a read, or EPIPE on a write after the server's close.
            io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => tally.faults.closed += 1,
            io::ErrorKind::TimedOut => tally.faults.stalled += 1,
            _ => tally.other_errors += 1,
        }
        tally.fail(format_args!("connection {id}: {e}"));
    }
    load.live.set(load.live.get() - 1);
    if load.live.get() == 0 {
        if let Some(waker) = load.watcher.take() {
            waker.wake();
        }
    }
}

async fn exchange(id: usize, wire: &mut impl Wire, load: &Load) -> io::Result<()> {
    let size = load.tape.size();
    let mut verifier = Verifier::new(
        Rc::clone(&load.tape),
        Rc::clone(&load.prefix),
        load.framing,
        id,
    );
    // When each message in flight was sent (or was due, in open loop).
    let mut in_flight: VecDeque<Instant> = VecDeque::with_capacity(load.pipeline);
    let mut message = 0u64;
    let mut cursor = load.tape.first(id);
    // Bytes of `message` already written, while it is only partly sent.
    let mut partial: Option<usize> = None;
    let mut replied = false;
    // A connection that moves nothing for this long is stalled: its reads and waits say
    // `TimedOut` (the runtime keeps the clock, at one store per operation).
    wire.socket().set_idle_timeout(Some(load.stall));
    loop {
        // One clock read per turn: replies that arrived are timed by it, and sends
        // started now are stamped with it.
        let now = Instant::now();
        if wire.queued() {
            wire.push()?;
        }

        // Take in what has arrived.
        SCRATCH.with_borrow_mut(|buf| {
            let n = match wire.try_read(buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ));
                }
                // Nothing owed to it (in open loop, waiting for its next send): not a
                // stall. The clock starts afresh.
                Err(e)
                    if e.kind() == io::ErrorKind::TimedOut
                        && in_flight.is_empty()
                        && partial.is_none() =>
                {
                    wire.socket().set_idle_timeout(Some(load.stall));
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no byte moved for {:.1} s (--stall-timeout)",
                            load.stall.as_secs_f64()
                        ),
                    ));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            let done = verifier.feed(&buf[..n]).map_err(|m| {
                load.tally.borrow_mut().mismatches += 1;
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    mismatch_message(m.message, &buf[..n], load),
                )
            })?;
            let mut tally = load.tally.borrow_mut();
            tally.bytes_received += n as u64;
            for _ in 0..done {
                let sent = in_flight.pop_front().ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "a reply to nothing")
                })?;
                let latency = now.saturating_duration_since(sent);
                tally.record(latency);
                if load.slo.is_some_and(|slo| latency > slo) {
                    tally.faults.late += 1;
                }
                tally.bytes_sent += size as u64;
            }
            if done > 0 && !replied {
                replied = true;
                Tally::record_in(
                    &mut tally.first_reply,
                    now.saturating_duration_since(load.start),
                );
            }
            Ok(())
        })?;

        // Send what the window, the schedule and the budget allow.
        let mut waiting_for_schedule = false;
        loop {
            let from = match partial {
                Some(from) => from,
                None => {
                    if in_flight.len() >= load.pipeline {
                        break;
                    }
                    let due = match &load.pace {
                        Some(pace) => pace.due(id, message, load.connections),
                        None => now,
                    };
                    if due > now {
                        waiting_for_schedule = !load.sending_is_over(now);
                        break;
                    }
                    if !load.may_send(now) {
                        break;
                    }
                    in_flight.push_back(due);
                    0
                }
            };
            match wire.try_write_vectored(&load.tape.slices(cursor, from)) {
                Ok(n) if from + n == size => {
                    partial = None;
                    message += 1;
                    cursor = load.tape.next(cursor);
                }
                Ok(n) => partial = Some(from + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    partial = Some(from);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if in_flight.is_empty() && partial.is_none() && load.sending_is_over(now) {
            return Ok(());
        }

        // Nothing to do until a reply, room to write, or the pacer says a send is due.
        let mut registered = false;
        let stream = wire.socket();
        let queued = wire.queued();
        std::future::poll_fn(|cx| {
            if stream.poll_read_ready(cx).is_ready()
                || ((partial.is_some() || queued) && stream.poll_write_ready(cx).is_ready())
            {
                return Poll::Ready(());
            }
            if let (true, Some(pace)) = (waiting_for_schedule, &load.pace) {
                let slot = &pace.waiting[id];
                match slot.take() {
                    // The pacer took the waker: a send fell due.
                    None if registered => return Poll::Ready(()),
                    _ => slot.set(Some(cx.waker().clone())),
                }
                registered = true;
            }
            Poll::Pending
        })
        .await;
    }
}

/// What to say of a reply (beginning `reply`) that is not the echo of message `message`.
/// The first reply wrong is most often a server that frames its replies otherwise than
/// bench was told, or one that speaks TLS.
fn mismatch_message(message: u64, reply: &[u8], load: &Load) -> String {
    if message == 0 && crate::tls::is_tls_record(reply) {
        return crate::tls::SPEAKS_TLS.to_string();
    }
    let prefix = String::from_utf8_lossy(&load.prefix);
    let framing = match load.framing {
        Framing::Chunk => "chunk",
        Framing::Line => "line",
    };
    if message > 0 {
        // Later replies go wrong when the framing differs only past the first message
        // (e.g. pipelined messages that the server answers as one chunk).
        return format!(
            "the reply to message {message} is not its echo with the prefix {prefix:?} in \
             {framing} framing: check the server's --framing and --prefix"
        );
    }
    format!(
        "the first reply is not the echo of the first message with the prefix {prefix:?} \
         in {framing} framing: give the server's --prefix ('' for a plain echo) and --framing"
    )
}
