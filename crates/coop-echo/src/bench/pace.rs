//! The open-loop schedule (`--rate`): when each message of each connection falls due.

use std::cell::Cell;
use std::task::Waker;
use std::time::{Duration, Instant};

/// The open-loop schedule: send slot `s` is due `s / rate` seconds after the start, and
/// message `k` of connection `c` has slot `k * connections + c`, so the sends of all
/// connections interleave evenly at the total rate.
pub(super) struct Pace {
    pub(super) start: Instant,
    /// Sends per second, over all connections.
    pub(super) rate: f64,
    /// Connections waiting for their next send to fall due, woken by
    /// [`pacer`](super::load::pacer).
    pub(super) waiting: Vec<Cell<Option<Waker>>>,
}

impl Pace {
    /// When `slot` falls due. Computed from the slot, not by adding up a gap rounded to
    /// the nanosecond, which drifts (1/30,000 s is 33,333.3 ns).
    pub(super) fn at(&self, slot: u128) -> Instant {
        // `as` saturates: a slot too far to say is due in 584 years.
        let nanos = (slot as f64 * 1e9 / self.rate) as u64;
        self.start + Duration::from_nanos(nanos)
    }

    pub(super) fn due(&self, connection: usize, message: u64, connections: usize) -> Instant {
        self.at(message as u128 * connections as u128 + connection as u128)
    }

    /// How many slots are due by `now` (slots `0..n`), by the same arithmetic as
    /// [`Self::at`], so that a connection woken for a slot finds it due.
    pub(super) fn due_by(&self, now: Instant) -> u128 {
        let elapsed = now.saturating_duration_since(self.start).as_secs_f64();
        let mut n = (elapsed * self.rate) as u128 + 1;
        while self.at(n) <= now {
            n += 1;
        }
        while n > 0 && self.at(n - 1) > now {
            n -= 1;
        }
        n
    }
}
