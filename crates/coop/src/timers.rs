//! The runtime's pending timers, as a data structure: who waits, and until when.
//!
//! Waiters live in a slab, so a pending `Sleep` checks on its own entry in constant time;
//! their order lives in a set of `(deadline, key)`, so the earliest is at hand and any
//! entry can be removed when its `Sleep` is dropped (a heap could not: cancelled timers,
//! every `timeout` whose future won, would pile up).

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::time::Instant;

use crate::slab::{Key, Slab};
use crate::waiter::{Waiter, Who};

#[derive(Default)]
pub(crate) struct Timers {
    waiters: RefCell<Slab<Waiter>>,
    order: RefCell<BTreeSet<(Instant, Key)>>,
    /// The first deadline of `order`, kept at hand: the run loop asks every round.
    earliest: Cell<Option<Instant>>,
    /// The earliest deadline may have moved since the run loop last asked: the alarm
    /// must be checked against it. (Checking every round costs more than the rest of the
    /// round's timer work.)
    moved: Cell<bool>,
    /// How many timers have fired, ever: a `Sleep` that saw this count when it last
    /// stored its waiter knows, while it is unchanged, that it has not fired.
    fired: Cell<u64>,
}

impl Timers {
    pub(crate) fn len(&self) -> usize {
        self.waiters.borrow().len()
    }

    #[inline]
    pub(crate) fn fired(&self) -> u64 {
        self.fired.get()
    }

    /// The earliest deadline, if it may have moved since the last call (or since
    /// [`mark_moved`](Self::mark_moved)); `None` if it has not, or no timer is pending.
    #[inline]
    pub(crate) fn take_moved_deadline(&self) -> Option<Instant> {
        if self.moved.replace(false) {
            self.earliest.get()
        } else {
            None
        }
    }

    /// Makes the next [`take_moved_deadline`](Self::take_moved_deadline) give the
    /// earliest deadline (the alarm rang, or could not be set).
    pub(crate) fn mark_moved(&self) {
        self.moved.set(true);
    }

    fn update_earliest(&self) {
        let first = self.order.borrow().first().map(|&(deadline, _)| deadline);
        self.earliest.set(first);
        self.moved.set(true);
    }

    /// Wakes every timer due by `now`, earliest first: tasks through `report`, sockets'
    /// idle clocks through `tick`, other waiters through their wakers. A timer set
    /// meanwhile for `now` or earlier fires in this call too.
    pub(crate) fn fire(
        &self,
        now: Instant,
        report: &mut impl FnMut(Key),
        tick: &mut impl FnMut(Key),
    ) {
        loop {
            // One at a time, no borrow held while waking: a waker may be anyone's code,
            // and may touch the timers.
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
            let waiter = self.waiters.borrow_mut().remove(key);
            self.fired.set(self.fired.get() + 1);
            self.update_earliest();
            if let Some(waiter) = waiter {
                waiter.wake(report, tick);
            }
        }
    }

    pub(crate) fn insert(&self, deadline: Instant, who: Who<'_>) -> Key {
        self.insert_waiter(deadline, who.to_waiter())
    }

    /// Sets a timer for the idle clock of the socket `key`, due at `deadline`.
    pub(crate) fn insert_clock(&self, deadline: Instant, socket: Key) -> Key {
        self.insert_waiter(deadline, Waiter::Clock(socket))
    }

    fn insert_waiter(&self, deadline: Instant, waiter: Waiter) -> Key {
        let key = self.waiters.borrow_mut().insert_with(|_| waiter);
        self.order.borrow_mut().insert((deadline, key));
        if self
            .earliest
            .get()
            .is_none_or(|earliest| deadline < earliest)
        {
            self.earliest.set(Some(deadline));
            self.moved.set(true);
        }
        key
    }

    /// Keeps the timer's waiter current; `false` once the timer has fired.
    pub(crate) fn refresh(&self, key: Key, who: Who<'_>) -> bool {
        let replaced = match self.waiters.borrow_mut().get_mut(key) {
            Some(stored) if who.is(stored) => return true,
            Some(stored) => std::mem::replace(stored, who.to_waiter()),
            None => return false,
        };
        // Dropped outside the borrow: a waker's drop may be anyone's code.
        drop(replaced);
        true
    }

    pub(crate) fn remove(&self, deadline: Instant, key: Key) {
        let removed = self.waiters.borrow_mut().remove(key);
        if removed.is_some() {
            self.order.borrow_mut().remove(&(deadline, key));
            if self.earliest.get() == Some(deadline) {
                self.update_earliest();
            }
        }
        drop(removed);
    }

    /// Drops every timer (the runtime is going away). Returns them, to be dropped by the
    /// caller outside any borrow.
    pub(crate) fn clear(&self) -> Vec<Waiter> {
        self.order.borrow_mut().clear();
        self.earliest.set(None);
        self.moved.set(true);
        self.waiters.borrow_mut().drain().collect()
    }
}
