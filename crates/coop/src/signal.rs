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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

pub use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use crate::net::Registration;
use crate::reactor::Direction;

/// A set of signals, delivered to whichever task awaits [`recv`](Signals::recv).
///
/// While a `Signals` exists, its signals no longer take their default action (SIGINT
/// and SIGTERM no longer end the process): the program decides. Once the last `Signals`
/// that holds a signal is dropped, that signal takes its default action again (SIGTERM
/// ends the process; a signal whose default is to be ignored is ignored). A disposition
/// the process had before (`SIG_IGN` inherited from `nohup`, a handler of its own) is
/// not restored: the default is.
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
    // Field order is drop order: out of the reactor's table, then closed, then the
    // signals given back to their default action.
    registration: Registration,
    inner: RefCell<Inner>,
    _held: Held,
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
        let held = Held::take(signals)?;
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
            _held: held,
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

/// Which signals the live `Signals` of the process hold, and how many hold each.
///
/// signal-hook keeps its handler installed once a signal was caught, and with no action
/// registered it does nothing: the signal would be ignored for good. So the first
/// `Signals` for a signal also registers, once for the process, signal-hook's emulation
/// of the default action, behind a flag that is down while any `Signals` holds the
/// signal.
static HELD: Mutex<Vec<Hold>> = Mutex::new(Vec::new());

struct Hold {
    signal: i32,
    holders: usize,
    /// Up: nobody holds the signal, and its default action runs.
    default: Arc<AtomicBool>,
}

/// A `Signals`' hold on its signals.
struct Held {
    signals: Vec<i32>,
}

impl Held {
    fn take(signals: &[i32]) -> io::Result<Held> {
        let mut held = Held {
            signals: Vec::with_capacity(signals.len()),
        };
        let mut table = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        for &signal in signals {
            match table.iter_mut().find(|hold| hold.signal == signal) {
                Some(hold) => {
                    hold.holders += 1;
                    hold.default.store(false, Ordering::SeqCst);
                }
                None => {
                    let default = Arc::new(AtomicBool::new(false));
                    // Fails for SIGKILL and SIGSTOP (as SignalDelivery would), and for a
                    // signal signal-hook knows no default for (real-time signals): their
                    // default cannot be emulated, and they stay ignored once dropped.
                    match signal_hook::flag::register_conditional_default(
                        signal,
                        Arc::clone(&default),
                    ) {
                        Ok(_) => {}
                        Err(e)
                            if e.raw_os_error()
                                == Some(rustix::io::Errno::INVAL.raw_os_error()) => {}
                        Err(e) => {
                            drop(table);
                            return Err(e);
                        }
                    }
                    table.push(Hold {
                        signal,
                        holders: 1,
                        default,
                    });
                }
            }
            held.signals.push(signal);
        }
        Ok(held)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut table = HELD.lock().unwrap_or_else(PoisonError::into_inner);
        for signal in &self.signals {
            if let Some(hold) = table.iter_mut().find(|hold| hold.signal == *signal) {
                hold.holders -= 1;
                if hold.holders == 0 {
                    hold.default.store(true, Ordering::SeqCst);
                }
            }
        }
    }
}

impl fmt::Debug for Signals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signals").finish_non_exhaustive()
    }
}

/// Completes on the next SIGINT (Ctrl-C at a terminal).
///
/// While it is awaited, SIGINT no longer ends the process; once it completes or is
/// dropped (and no other [`Signals`] holds SIGINT), SIGINT ends the process again, so a
/// second Ctrl-C during a slow shutdown still stops it.
///
/// # Errors
///
/// Outside a coop runtime, or when the OS refuses the self-pipe.
///
/// # Examples
///
/// ```no_run
/// coop::block_on(async {
///     coop::signal::ctrl_c().await?;
///     println!("Ctrl-C: stopping");
///     std::io::Result::Ok(())
/// })
/// .unwrap();
/// ```
pub async fn ctrl_c() -> io::Result<()> {
    Signals::new(&[SIGINT])?.recv().await.map(drop)
}
