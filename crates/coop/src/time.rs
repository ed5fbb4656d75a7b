//! Timers: [`sleep`], [`sleep_until`] and [`timeout`].
//!
//! The seed has no timers; its `select()` waits forever. Here the run loop hands the OS
//! poll the time left until the earliest deadline, so a sleeping runtime wakes exactly
//! when a timer is due and never on a periodic tick.
//!
//! Timers live in an ordered map keyed by deadline. A [`Sleep`] dropped before it fires
//! takes its entry out with it, so cancelled timers (a `timeout` whose future won) leave
//! nothing behind.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::scheduler;

/// The runtime's pending timers.
pub(crate) struct Timers {
    /// `(deadline, id)`: the id tells apart timers due at the same instant.
    entries: RefCell<BTreeMap<(Instant, u64), Waker>>,
    next_id: Cell<u64>,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Timers {
            entries: RefCell::new(BTreeMap::new()),
            next_id: Cell::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// The earliest deadline, if any timer is pending.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .borrow()
            .first_key_value()
            .map(|(&(deadline, _), _)| deadline)
    }

    /// Wakes every timer due by `now`, earliest first.
    pub(crate) fn fire(&self, now: Instant) {
        loop {
            // One at a time: a woken waker may be anyone's and may touch the timers.
            let waker = {
                let mut entries = self.entries.borrow_mut();
                match entries.first_entry() {
                    Some(entry) if entry.key().0 <= now => entry.remove(),
                    _ => return,
                }
            };
            waker.wake();
        }
    }

    fn insert(&self, deadline: Instant, waker: Waker) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.entries.borrow_mut().insert((deadline, id), waker);
        id
    }

    /// Keeps the timer's waker current; `false` once the timer has fired.
    fn refresh(&self, deadline: Instant, id: u64, waker: &Waker) -> bool {
        match self.entries.borrow_mut().get_mut(&(deadline, id)) {
            Some(stored) => {
                if !stored.will_wake(waker) {
                    stored.clone_from(waker);
                }
                true
            }
            None => false,
        }
    }

    fn remove(&self, deadline: Instant, id: u64) {
        let removed = self.entries.borrow_mut().remove(&(deadline, id));
        drop(removed);
    }
}

/// A future that completes at a deadline. Made by [`sleep`] and [`sleep_until`].
#[must_use = "a Sleep does nothing unless awaited"]
pub struct Sleep {
    /// `None`: a deadline too far to represent, which is never reached.
    deadline: Option<Instant>,
    /// Set once the timer is in the runtime's map.
    entry: Option<(Rc<Timers>, u64)>,
}

/// Waits until `duration` has passed.
///
/// # Panics
///
/// When polled outside a coop runtime.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
///
/// coop::block_on(async {
///     let start = Instant::now();
///     coop::time::sleep(Duration::from_millis(10)).await;
///     assert!(start.elapsed() >= Duration::from_millis(10));
/// });
/// ```
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now().checked_add(duration),
        entry: None,
    }
}

/// Waits until `deadline`.
///
/// # Panics
///
/// When polled outside a coop runtime.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline: Some(deadline),
        entry: None,
    }
}

impl Sleep {
    /// When this sleep ends (`None` if never: the duration was too large to represent).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Moves the deadline, as if the `Sleep` had been made anew.
    pub fn reset(&mut self, deadline: Instant) {
        self.cancel();
        self.deadline = Some(deadline);
    }

    fn cancel(&mut self) {
        if let (Some((timers, id)), Some(deadline)) = (self.entry.take(), self.deadline) {
            timers.remove(deadline, id);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        match &self.entry {
            Some((timers, id)) if timers.refresh(deadline, *id, cx.waker()) => Poll::Pending,
            Some(_) => Poll::Ready(()),
            None if Instant::now() >= deadline => Poll::Ready(()),
            None => {
                let timers = scheduler::current_timers()
                    .unwrap_or_else(|| panic!("coop::time::Sleep polled outside a coop runtime"));
                let id = timers.insert(deadline, cx.waker().clone());
                self.entry = Some((timers, id));
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .field("registered", &self.entry.is_some())
            .finish()
    }
}

/// The error of a [`timeout`] whose deadline came first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed(());

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

impl From<Elapsed> for std::io::Error {
    fn from(elapsed: Elapsed) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, elapsed)
    }
}

/// Runs `future` for at most `duration`: its output, or [`Elapsed`] if time ran out first
/// (the future is then dropped, and with it whatever it was waiting for).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use coop::time::{sleep, timeout};
///
/// coop::block_on(async {
///     let quick = timeout(Duration::from_secs(5), async { 7 }).await;
///     assert_eq!(quick, Ok(7));
///     let slow = timeout(Duration::from_millis(5), sleep(Duration::from_secs(60))).await;
///     assert!(slow.is_err());
/// });
/// ```
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    let mut deadline = sleep(duration);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(&mut deadline).poll(cx).map(|()| Err(Elapsed(())))
    })
    .await
}
