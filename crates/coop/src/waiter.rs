//! Who waits in a waiting area (a socket's, a timer's): a coop task, named by its key,
//! or anyone else, by the waker they gave.
//!
//! A task is kept by key, not by reference: a socket or a timer never keeps a task (or
//! anything the task owns) alive, and a key whose task has finished finds nothing when
//! it is reported.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Waker;

use crate::slab::Key;

/// A stored waiter.
pub(crate) enum Waiter {
    /// A coop task of the runtime the waiting area belongs to, parked by its own waker.
    Task(Key),
    /// Anything else: a combinator's waker, another runtime's, another executor's.
    Waker(Waker),
    /// A socket's idle clock, by the socket's key: only ever a timer's waiter.
    Clock(Key),
}

/// A waiter about to be stored: borrowed, so that parking again costs a comparison and
/// no clone.
#[derive(Clone, Copy)]
pub(crate) enum Who<'a> {
    Task(Key),
    Waker(&'a Waker),
}

impl Who<'_> {
    /// Whether `waiter` already stands for this one.
    #[inline]
    pub(crate) fn is(self, waiter: &Waiter) -> bool {
        match (self, waiter) {
            (Who::Task(a), Waiter::Task(b)) => a == *b,
            (Who::Waker(a), Waiter::Waker(b)) => a.will_wake(b),
            _ => false,
        }
    }

    pub(crate) fn to_waiter(self) -> Waiter {
        match self {
            Who::Task(key) => Waiter::Task(key),
            Who::Waker(waker) => Waiter::Waker(waker.clone()),
        }
    }
}

impl Waiter {
    /// Wakes the waiter: a task's key goes to `report` (the runtime schedules it), a
    /// socket's to `tick`, a waker is woken.
    #[inline]
    pub(crate) fn wake(self, report: &mut impl FnMut(Key), tick: &mut impl FnMut(Key)) {
        match self {
            Waiter::Task(key) => report(key),
            Waiter::Waker(waker) => wake_foreign(waker),
            Waiter::Clock(socket) => tick(socket),
        }
    }
}

/// Wakes a waker that is not one of the runtime's tasks, from the run loop (outside any
/// task's poll). A waker is anyone's code, and a panic in it is its owner's bug: it is
/// caught here (the panic hook has printed it), so that the run loop, and the waiters
/// after this one, go on.
#[cold]
pub(crate) fn wake_foreign(waker: Waker) {
    let _ = catch_unwind(AssertUnwindSafe(|| waker.wake()));
}
