//! What the connections of one thread share: the messages left to send, the counts, and
//! the pacer that wakes them when a send falls due.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;
use std::time::{Duration, Instant};

use coop::time::sleep_until;

use super::pace::Pace;
use super::report::Tally;
use super::verify::Tape;
use crate::echo::Framing;

/// What every connection shares.
pub(super) struct Load {
    pub(super) tape: Rc<Tape>,
    pub(super) prefix: Rc<[u8]>,
    pub(super) framing: Framing,
    pub(super) pipeline: usize,
    pub(super) connections: usize,
    /// The open-loop schedule, if any.
    pub(super) pace: Option<Pace>,
    /// When sending stops, in a timed run.
    pub(super) deadline: Option<Instant>,
    /// Messages left to send, in a counted run.
    pub(super) budget: Cell<u64>,
    pub(super) tally: RefCell<Tally>,
    /// When the load began: each connection's first reply is timed from it.
    pub(super) start: Instant,
    /// A connection that moves nothing for this long is stalled (`--stall-timeout`).
    pub(super) stall: Duration,
    /// Replies slower than this are late (`--slo`).
    pub(super) slo: Option<Duration>,
    /// Connections still running, and the waker of whoever waits for them.
    pub(super) live: Cell<usize>,
    pub(super) watcher: Cell<Option<Waker>>,
}

impl Load {
    /// Takes the right to send one more message.
    pub(super) fn may_send(&self, now: Instant) -> bool {
        if self.deadline.is_some_and(|d| now >= d) {
            return false;
        }
        match self.budget.get() {
            0 => false,
            n => {
                self.budget.set(n - 1);
                true
            }
        }
    }

    pub(super) fn sending_is_over(&self, now: Instant) -> bool {
        self.budget.get() == 0 || self.deadline.is_some_and(|d| now >= d)
    }
}

/// How often at most the pacer wakes: sends are at most this late (and the lateness is
/// in the latency, which is measured from the due time). Finer costs the load generator
/// a timer wake-up per message.
const PACER_RESOLUTION: Duration = Duration::from_micros(100);

/// Wakes every connection with a send that fell due: one timer for the whole load
/// instead of one per message.
pub(super) async fn pacer(load: Rc<Load>) {
    let Some(pace) = &load.pace else { return };
    let n = load.connections as u128;
    let mut next_slot: u128 = 0;
    while load.live.get() > 0 {
        let now = Instant::now();
        let due = pace.due_by(now).max(next_slot);
        // Each connection needs waking once, however many of its sends fell due.
        for slot in next_slot.max(due.saturating_sub(n))..due {
            if let Some(waker) = pace.waiting[(slot % n) as usize].take() {
                waker.wake();
            }
        }
        next_slot = due;
        if load.sending_is_over(now) {
            // Let everyone see the end, then stop.
            for waiting in &pace.waiting {
                if let Some(waker) = waiting.take() {
                    waker.wake();
                }
            }
            return;
        }
        sleep_until(pace.at(next_slot).max(now + PACER_RESOLUTION)).await;
    }
}
