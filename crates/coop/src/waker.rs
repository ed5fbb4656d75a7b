//! How a task gets back into the ready queue.
//!
//! In the seed, a socket that turns ready moves its generator from `recv_wait` back to
//! `tasks`. Here the reactor (or a timer, a channel, another task) calls
//! [`Waker::wake`](std::task::Waker::wake), which lands in [`Header::wake_by_ref`]:
//!
//! * on the runtime's own thread, the task goes straight to the back of the ready
//!   queue: no lock, no system call;
//! * on any other thread (a `Waker` is `Send`), the task's header goes into the
//!   runtime's [`Inbox`], and the OS poll is interrupted so the runtime picks it up.
//!
//! A wake is idempotent: a task sits in the queue (and in the inbox) at most once,
//! however many times it is woken before it runs.
//!
//! The reactor does not go through here for the task it parks: it holds the task itself
//! (see `reactor::Waiter`), and schedules it without a virtual call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Wake, Waker};

use crate::scheduler;
use crate::slab::Key;

/// What a [`Waker`] of a coop task points at: the task's key and its runtime's inbox.
pub(crate) struct Header {
    key: Key,
    inbox: Arc<Inbox>,
    /// In the inbox already (wakes from other threads are queued there at most once).
    in_inbox: AtomicBool,
}

impl Header {
    pub(crate) fn waker(key: Key, inbox: &Arc<Inbox>) -> Waker {
        Waker::from(Arc::new(Header {
            key,
            inbox: Arc::clone(inbox),
            in_inbox: AtomicBool::new(false),
        }))
    }
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !scheduler::wake_local(&self.inbox, self.key)
            && !self.in_inbox.swap(true, Ordering::AcqRel)
        {
            self.inbox.push(Arc::clone(self));
        }
    }
}

/// Wakes that came from other threads, waiting for the runtime's thread to take them.
pub(crate) struct Inbox {
    headers: Mutex<Vec<Arc<Header>>>,
    /// Set when `keys` may be non-empty, so the run loop checks it without locking.
    pending: AtomicBool,
    /// Interrupts the OS poll.
    waker: mio::Waker,
}

impl Inbox {
    pub(crate) fn new(waker: mio::Waker) -> Self {
        Inbox {
            headers: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            waker,
        }
    }

    fn push(&self, header: Arc<Header>) {
        self.headers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(header);
        if !self.pending.swap(true, Ordering::AcqRel) {
            // If this fails the runtime's epoll fd is gone, and with it the runtime:
            // nobody is left to wake.
            let _ = self.waker.wake();
        }
    }

    /// Hands the key of every task woken from another thread to `wake`.
    pub(crate) fn drain(&self, mut wake: impl FnMut(Key)) {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let headers =
            std::mem::take(&mut *self.headers.lock().unwrap_or_else(PoisonError::into_inner));
        for header in headers {
            header.in_inbox.store(false, Ordering::Release);
            wake(header.key);
        }
    }
}
