//! Timers: [`sleep`], [`sleep_until`], [`interval`], [`timeout`], [`timeout_at`], and
//! the runtime's idea of [`now`].
//!
//! The seed has no timers; its `select()` waits forever. Here the run loop wakes the OS
//! poll when the earliest deadline passes, so a sleeping runtime wakes exactly when a
//! timer is due and never on a periodic tick.
//!
//! A [`Sleep`] dropped before it fires takes its timer out with it, so cancelled timers
//! (a `timeout` whose future won) leave nothing behind. A timer keeps the task that waits
//! on it by key, never alive.

use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::context::{self, Core};
use crate::slab::Key;

/// The time, as of the runtime's last return from the OS poll: what a task that runs
/// now should call "now" for bookkeeping (idle timeouts, rates), at the cost of one
/// thread-local read instead of a clock read per call. Never earlier than the start of
/// the current round of tasks; outside a runtime, simply [`Instant::now`].
pub fn now() -> Instant {
    context::now()
}

/// A future that completes at a deadline. Made by [`sleep`] and [`sleep_until`].
///
/// Once polled, it belongs to the runtime it was polled in, and holds that runtime's
/// core: kept after the runtime is dropped, it keeps three of the runtime's descriptors
/// open (its epoll, the timerfd that wakes it for timers, and the eventfd that other
/// threads wake it by) until it is dropped too. Sockets do the same. The runtime is gone
/// all the same: nothing of it runs again, and a [`Remote`](crate::Remote) to it says so.
#[must_use = "a Sleep does nothing unless awaited"]
pub struct Sleep {
    /// `None`: a deadline too far to represent, which is never reached.
    deadline: Option<Instant>,
    /// Set once the timer is in the runtime's table.
    entry: Option<Entry>,
}

/// A registered timer, and what its `Sleep` last knew of it.
struct Entry {
    core: Rc<Core>,
    key: Key,
    /// `Timers::fired` when the waiter was last stored.
    fired_seen: u64,
    /// The waker the waiter was stored for: while it polls with one that wakes the same
    /// task, the stored waiter is current. A clone, not its address: a freed waker's
    /// address may come back as another task's (and the stored waiter would be stale).
    waker: Waker,
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
            entry.core.timers.remove(deadline, entry.key);
        }
    }
}

impl Future for Sleep {
    type Output = ();

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Registered, nothing fired since, same waker: nothing to look up (a connection
        // polls its idle timer every time it parks).
        if let Some(entry) = &self.entry {
            if entry.fired_seen == entry.core.timers.fired() && entry.waker.will_wake(cx.waker()) {
                return Poll::Pending;
            }
        }
        self.poll_slow(cx)
    }
}

impl Sleep {
    fn poll_slow(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        match &mut self.entry {
            Some(entry) => {
                let who = context::who(cx, &entry.core);
                if !entry.core.timers.refresh(entry.key, who) {
                    return Poll::Ready(());
                }
                entry.fired_seen = entry.core.timers.fired();
                entry.waker.clone_from(cx.waker());
                Poll::Pending
            }
            // Already due: it costs the task budget like a ready socket, so that a loop of
            // elapsed sleeps still lets the others run.
            None if Instant::now() >= deadline => context::poll_spend(cx),
            None => {
                let core = context::with_core(Rc::clone)
                    .unwrap_or_else(|| panic!("coop::time::Sleep polled outside a coop runtime"));
                let key = core.timers.insert(deadline, context::who(cx, &core));
                self.entry = Some(Entry {
                    fired_seen: core.timers.fired(),
                    waker: cx.waker().clone(),
                    core,
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
/// (the future is then dropped, and with it whatever it was waiting for). The future is
/// polled first: one that is ready at once wins even with a zero duration.
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
    within(sleep(duration), future).await
}

/// [`timeout`] with a deadline instead of a duration: several steps can share one
/// deadline.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use coop::time::{sleep, timeout_at};
///
/// coop::block_on(async {
///     let deadline = Instant::now() + Duration::from_millis(20);
///     assert_eq!(timeout_at(deadline, async { 1 }).await, Ok(1));
///     let late = timeout_at(deadline, sleep(Duration::from_secs(60))).await;
///     assert!(late.is_err());
///     assert!(Instant::now() >= deadline);
/// });
/// ```
pub async fn timeout_at<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    within(sleep_until(deadline), future).await
}

async fn within<F: Future>(mut deadline: Sleep, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        Pin::new(&mut deadline).poll(cx).map(|()| Err(Elapsed(())))
    })
    .await
}

/// A clock that ticks every `period`, the first tick at once: see [`Interval`].
///
/// # Panics
///
/// When `period` is zero.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
///
/// coop::block_on(async {
///     let start = Instant::now();
///     let mut every = coop::time::interval(Duration::from_millis(5));
///     for _ in 0..3 {
///         every.tick().await;
///     }
///     // Ticks at 0, 5 and 10 ms.
///     assert!(start.elapsed() >= Duration::from_millis(10));
/// });
/// ```
pub fn interval(period: Duration) -> Interval {
    interval_at(Instant::now(), period)
}

/// A clock whose first tick is at `start`, then one every `period`: see [`Interval`].
///
/// # Panics
///
/// When `period` is zero.
pub fn interval_at(start: Instant, period: Duration) -> Interval {
    assert!(
        !period.is_zero(),
        "coop::time::interval: the period must not be zero"
    );
    Interval {
        next: start,
        period,
        sleep: sleep_until(start),
    }
}

/// Ticks on a fixed schedule: `start`, `start + period`, `start + 2 × period`, ...
///
/// **Missed ticks are skipped.** A tick taken late (the task was busy, the machine
/// paused) is still given once, at once; the ticks that fell due meanwhile are not made
/// up in a burst: the next is the first one of the schedule that is still ahead. So a
/// periodic job never runs twice in a row to catch up, and keeps its phase.
///
/// Cancel safe: a [`tick`](Self::tick) dropped before it completes takes no tick.
#[derive(Debug)]
pub struct Interval {
    /// The tick the clock waits for.
    next: Instant,
    period: Duration,
    sleep: Sleep,
}

impl Interval {
    /// Waits for the next tick, and returns the instant it was due.
    pub async fn tick(&mut self) -> Instant {
        std::future::poll_fn(|cx| self.poll_tick(cx)).await
    }

    /// The poll behind [`tick`](Self::tick), for hand-written futures.
    pub fn poll_tick(&mut self, cx: &mut Context<'_>) -> Poll<Instant> {
        if Pin::new(&mut self.sleep).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let due = self.next;
        let now = Instant::now();
        let mut next = due + self.period;
        if next <= now {
            // Skip what was missed: the first tick of the schedule still ahead.
            let behind = (now - due).as_nanos() / self.period.as_nanos();
            let periods = u32::try_from(behind).unwrap_or(u32::MAX);
            next = due
                .checked_add(self.period.saturating_mul(periods.saturating_add(1)))
                .unwrap_or(now + self.period);
        }
        self.next = next;
        self.sleep.reset(next);
        Poll::Ready(due)
    }

    /// Starts the schedule again from now: the next tick is one period away.
    pub fn reset(&mut self) {
        self.next = Instant::now() + self.period;
        self.sleep.reset(self.next);
    }

    /// The time between ticks.
    pub fn period(&self) -> Duration {
        self.period
    }
}
