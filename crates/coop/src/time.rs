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
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::scheduler;
use crate::slab::{Key, Slab};

/// The runtime's pending timers.
///
/// Wakers live in a slab, so a pending [`Sleep`] checks on its own entry in constant
/// time; their order lives in a set of `(deadline, key)`, so the earliest is at hand and
/// any can be removed when its `Sleep` is dropped.
pub(crate) struct Timers {
    wakers: RefCell<Slab<Waker>>,
    order: RefCell<BTreeSet<(Instant, Key)>>,
    /// The first deadline of `order`, kept at hand: the run loop asks every round.
    earliest: Cell<Option<Instant>>,
    /// How many timers have fired, ever: a `Sleep` that saw this count when it last
    /// registered knows, while it is unchanged, that it has not fired.
    fired: Cell<u64>,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Timers {
            wakers: RefCell::new(Slab::new()),
            order: RefCell::new(BTreeSet::new()),
            earliest: Cell::new(None),
            fired: Cell::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.wakers.borrow().len()
    }

    /// The earliest deadline, if any timer is pending.
    #[inline]
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.earliest.get()
    }

    fn update_earliest(&self) {
        let first = self.order.borrow().first().map(|&(deadline, _)| deadline);
        self.earliest.set(first);
    }

    /// Wakes every timer due by `now`, earliest first.
    pub(crate) fn fire(&self, now: Instant) {
        loop {
            // One at a time: a woken waker may be anyone's and may touch the timers.
            let key = {
                let mut order = self.order.borrow_mut();
                match order.first() {
                    Some(&(deadline, key)) if deadline <= now => {
                        order.pop_first();
                        key
                    }
                    _ => break,
                }
            };
            let waker = self.wakers.borrow_mut().remove(key);
            self.fired.set(self.fired.get() + 1);
            self.update_earliest();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
        self.update_earliest();
    }

    fn insert(&self, deadline: Instant, waker: Waker) -> Key {
        let key = self.wakers.borrow_mut().insert_with(|_| waker);
        self.order.borrow_mut().insert((deadline, key));
        if self
            .earliest
            .get()
            .is_none_or(|earliest| deadline < earliest)
        {
            self.earliest.set(Some(deadline));
        }
        key
    }

    /// Keeps the timer's waker current; `false` once the timer has fired.
    fn refresh(&self, key: Key, waker: &Waker) -> bool {
        let replaced = match self.wakers.borrow_mut().get_mut(key) {
            Some(stored) if stored.will_wake(waker) => return true,
            Some(stored) => std::mem::replace(stored, waker.clone()),
            None => return false,
        };
        // Dropped outside the borrow: a waker's drop may be anyone's code.
        drop(replaced);
        true
    }

    fn remove(&self, deadline: Instant, key: Key) {
        let removed = self.wakers.borrow_mut().remove(key);
        if removed.is_some() {
            self.order.borrow_mut().remove(&(deadline, key));
            if self.earliest.get() == Some(deadline) {
                self.update_earliest();
            }
        }
        drop(removed);
    }
}

thread_local! {
    /// When the runtime last came back from the OS poll, once someone asked.
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time, as of the runtime's last return from the OS poll: what a task that runs
/// now should call "now" for bookkeeping (idle timeouts, rates), at the cost of one
/// thread-local read instead of a clock read per call. Never earlier than the start of
/// the current round of tasks; outside a runtime, simply [`Instant::now`].
pub fn now() -> Instant {
    NOW.get().unwrap_or_else(|| {
        let now = Instant::now();
        NOW.set(Some(now));
        now
    })
}

/// Called by the run loop after each OS poll: the next [`now`] reads the clock afresh.
pub(crate) fn forget_now() {
    NOW.set(None);
}

/// A future that completes at a deadline. Made by [`sleep`] and [`sleep_until`].
#[must_use = "a Sleep does nothing unless awaited"]
pub struct Sleep {
    /// `None`: a deadline too far to represent, which is never reached.
    deadline: Option<Instant>,
    /// Set once the timer is in the runtime's table.
    entry: Option<Entry>,
}

/// A registered timer, and what its `Sleep` last knew of it.
struct Entry {
    timers: Rc<Timers>,
    key: Key,
    /// `Timers::fired` when the waker was last stored.
    fired_seen: u64,
    /// The stored waker's identity (data and vtable addresses, compared only).
    waker: (usize, usize),
}

fn identity(waker: &Waker) -> (usize, usize) {
    (
        waker.data() as usize,
        std::ptr::from_ref(waker.vtable()) as usize,
    )
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
        if let (Some(entry), Some(deadline)) = (self.entry.take(), self.deadline) {
            entry.timers.remove(deadline, entry.key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        match &mut self.entry {
            Some(entry) => {
                // Nothing fired, same waker: nothing to look up (a task polls its idle
                // timer every time it parks).
                let fired = entry.timers.fired.get();
                if fired == entry.fired_seen && entry.waker == identity(cx.waker()) {
                    return Poll::Pending;
                }
                if !entry.timers.refresh(entry.key, cx.waker()) {
                    return Poll::Ready(());
                }
                entry.fired_seen = fired;
                entry.waker = identity(cx.waker());
                Poll::Pending
            }
            // Already due: it costs the task budget like a ready socket, so that a loop of
            // elapsed sleeps still lets the others run.
            None if Instant::now() >= deadline => crate::budget::poll_spend(cx),
            None => {
                let timers = scheduler::current_timers()
                    .unwrap_or_else(|| panic!("coop::time::Sleep polled outside a coop runtime"));
                let key = timers.insert(deadline, cx.waker().clone());
                self.entry = Some(Entry {
                    fired_seen: timers.fired.get(),
                    waker: identity(cx.waker()),
                    timers,
                    key,
                });
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
