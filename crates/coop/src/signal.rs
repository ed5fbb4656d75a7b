//! Unix signals as something a task can wait for.
//!
//! A signal handler may do almost nothing safely, so the handler (signal-hook's) only
//! writes a byte to a pipe; the pipe's read end sits in the OS poll like a socket, and
//! [`Signals::recv`] parks on it. The run loop is never interrupted in the middle of a
//! task.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;

pub use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use crate::net::Registration;
use crate::reactor::Direction;

/// A set of signals, delivered to whichever task awaits [`recv`](Signals::recv).
///
/// While a `Signals` exists, its signals no longer take their default action (SIGINT
/// and SIGTERM no longer end the process): the program decides.
///
/// # Examples
///
/// ```no_run
/// use coop::signal::{Signals, SIGINT, SIGTERM};
///
/// coop::block_on(async {
///     let signals = Signals::new(&[SIGINT, SIGTERM])?;
///     let signal = signals.recv().await?;
///     println!("got signal {signal}, shutting down");
///     std::io::Result::Ok(())
/// })
/// .unwrap();
/// ```
pub struct Signals {
    // Field order is drop order: out of the reactor's table, then closed.
    registration: Registration,
    inner: RefCell<Inner>,
}

struct Inner {
    signals: SignalDelivery<UnixStream, SignalOnly>,
    /// Received, not yet handed out.
    received: VecDeque<i32>,
}

impl Signals {
    /// Starts catching `signals`. Fails for signals that cannot be caught (SIGKILL,
    /// SIGSTOP) and outside a coop runtime.
    pub fn new(signals: &[i32]) -> io::Result<Signals> {
        // The self-pipe: signal-hook's handler writes to one end, the other sits in the
        // OS poll. Both non-blocking: the handler must never block, nor must `pending`.
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let signals = SignalDelivery::with_pipe(read, write, SignalOnly, signals)?;
        // The self-pipe's descriptor is the crate's own; traces show -1.
        let registration = Registration::new(signals.get_read().as_fd(), -1)?;
        Ok(Signals {
            registration,
            inner: RefCell::new(Inner {
                signals,
                received: VecDeque::new(),
            }),
        })
    }

    /// Waits for the next signal and returns its number. A signal that arrives several
    /// times before it is received counts once.
    pub async fn recv(&self) -> io::Result<i32> {
        loop {
            if let Some(signal) = self.inner.borrow_mut().received.pop_front() {
                return Ok(signal);
            }
            self.registration.ready(Direction::Read).await;
            let mut inner = self.inner.borrow_mut();
            let Inner { signals, received } = &mut *inner;
            // `pending` drains the pipe: the next signal writes to it afresh.
            received.extend(signals.pending());
            if received.is_empty() {
                self.registration.clear(Direction::Read);
            }
        }
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signals").finish_non_exhaustive()
    }
}
