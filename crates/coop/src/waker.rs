//! How a task gets back into the ready queue.
//!
//! In the seed, a socket that turns ready moves its generator from `recv_wait` back to
//! `tasks`. Here the reactor (or a timer, a channel, another task) calls
//! [`Waker::wake`](std::task::Waker::wake), which lands in [`Header::wake_by_ref`]:
//!
//! * on the runtime's own thread, the task's key goes straight to the back of the ready
//!   queue: no lock, no system call;
//! * on any other thread (a `Waker` is `Send`), the key goes into the runtime's
//!   [`Inbox`], and the OS poll is interrupted so the runtime picks it up.
//!
//! `queued` makes a wake idempotent: a task sits in the queue at most once, however many
//! times it is woken before it runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Wake;

use crate::scheduler;
use crate::slab::Key;

/// What a [`Waker`](std::task::Waker) of a coop task points at.
pub(crate) struct Header {
    key: Key,
    queued: AtomicBool,
    inbox: Arc<Inbox>,
}

impl Header {
    /// A header for a task that is about to be pushed on the ready queue.
    pub(crate) fn new_queued(key: Key, inbox: &Arc<Inbox>) -> Self {
        Header {
            key,
            queued: AtomicBool::new(true),
            inbox: Arc::clone(inbox),
        }
    }

    /// Called just before the task is polled: a wake from now on queues it again.
    pub(crate) fn unqueue(&self) {
        self.queued.store(false, Ordering::Release);
    }
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if !scheduler::schedule_local(&self.inbox, self.key) {
            self.inbox.push(self.key);
        }
    }
}

/// Wakes that came from other threads, waiting for the runtime's thread to take them.
pub(crate) struct Inbox {
    keys: Mutex<Vec<Key>>,
    /// Set when `keys` may be non-empty, so the run loop checks it without locking.
    pending: AtomicBool,
    /// Interrupts the OS poll.
    waker: mio::Waker,
}

impl Inbox {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Inbox {
            keys: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            waker,
        }
    }

    fn push(&self, key: Key) {
        self.keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(key);
        if !self.pending.swap(true, Ordering::AcqRel) {
            // If this fails the runtime's epoll fd is gone, and with it the runtime:
            // nobody is left to wake.
            let _ = self.waker.wake();
        }
    }

    /// Hands every key pushed from other threads to `schedule`.
    pub(crate) fn drain(&self, mut schedule: impl FnMut(Key)) {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let keys = std::mem::take(&mut *self.keys.lock().unwrap_or_else(PoisonError::into_inner));
        keys.into_iter().for_each(&mut schedule);
    }
}
