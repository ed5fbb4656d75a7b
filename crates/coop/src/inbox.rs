//! Wakes that come from other threads.
//!
//! A [`Waker`](std::task::Waker) is `Send`: it may be woken from any thread. A wake from
//! the runtime's own thread schedules the task at once; from any other thread the task's
//! [`Header`] goes into its runtime's inbox, and the OS poll is interrupted so that the
//! runtime's thread takes it.
//!
//! A [`Remote`](crate::Remote) uses the same inbox: a job (a task to start there) or a
//! request to stop goes in, and the OS poll is interrupted the same way.
//!
//! A header points at its inbox weakly: a waker kept past its runtime's life (in another
//! thread, in a global) keeps neither the inbox nor its descriptor alive, and a wake
//! through it then does nothing.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use rustix::io::Errno;

use crate::slab::Key;

/// What a coop task's [`Waker`](std::task::Waker) points at.
pub(crate) struct Header {
    pub(crate) key: Key,
    pub(crate) inbox: Weak<Inbox>,
    /// In the inbox already: a task waits there at most once.
    in_inbox: AtomicBool,
}

impl Header {
    pub(crate) fn new(key: Key, inbox: &Arc<Inbox>) -> Header {
        Header {
            key,
            inbox: Arc::downgrade(inbox),
            in_inbox: AtomicBool::new(false),
        }
    }

    /// Hands the wake to the runtime's thread (does nothing if the runtime is gone).
    pub(crate) fn send(self: &Arc<Self>) {
        if self.in_inbox.swap(true, Ordering::AcqRel) {
            return;
        }
        match self.inbox.upgrade() {
            Some(inbox) => inbox.push(Arc::clone(self)),
            None => self.in_inbox.store(false, Ordering::Release),
        }
    }
}

/// Work handed to the runtime's thread by another: it starts a task there.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Queue {
    headers: Vec<Arc<Header>>,
    jobs: Vec<Job>,
    /// The runtime is gone: nothing is taken any more. Kept under the lock, so that a
    /// push either lands before the runtime's last look or is refused.
    closed: bool,
}

impl Queue {
    /// What waits, taken out (to be handled, or dropped, with the lock released).
    fn take(&mut self) -> (Vec<Arc<Header>>, Vec<Job>) {
        (
            std::mem::take(&mut self.headers),
            std::mem::take(&mut self.jobs),
        )
    }
}

/// Wakes, jobs and a stop request from other threads, waiting for the runtime's thread
/// to take them.
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    /// Set when `queue` may be non-empty (or `stop` newly set), so the run loop checks it
    /// without locking.
    pending: AtomicBool,
    /// [`Remote::stop`](crate::Remote::stop) was called. Never unset.
    stop: AtomicBool,
    /// An eventfd in the OS poll, edge-triggered: a write interrupts the poll.
    eventfd: OwnedFd,
}

impl Inbox {
    pub(crate) fn new(eventfd: OwnedFd) -> Self {
        Inbox {
            queue: Mutex::new(Queue::default()),
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            eventfd,
        }
    }

    /// Interrupts the OS poll. Each write is a new edge; nobody reads the counter, so
    /// once in 2^64 writes it is full (`EAGAIN`): then it is emptied and written again.
    fn interrupt(&self) {
        let one = 1u64.to_ne_bytes();
        if rustix::io::write(&self.eventfd, &one) == Err(Errno::AGAIN) {
            let mut count = [0; 8];
            let _ = rustix::io::read(&self.eventfd, &mut count);
            let _ = rustix::io::write(&self.eventfd, &one);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Nothing panics while the lock is held: a poisoned queue is whole.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the runtime's thread that there is something to take.
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.interrupt();
        }
    }

    fn push(&self, header: Arc<Header>) {
        {
            let mut queue = self.lock();
            if queue.closed {
                return;
            }
            queue.headers.push(header);
        }
        self.notify();
    }

    /// Queues `job` to run on the runtime's thread, at its next OS poll. Gives it back
    /// if the runtime is gone.
    pub(crate) fn push_job(&self, job: Job) -> Result<(), Job> {
        {
            let mut queue = self.lock();
            if queue.closed {
                return Err(job);
            }
            queue.jobs.push(job);
        }
        self.notify();
        Ok(())
    }

    /// The runtime is gone (whoever still holds a socket or a timer of it, which keep
    /// this inbox alive): every later push is refused, and what was queued is dropped
    /// unrun, here, with no lock held.
    pub(crate) fn close(&self) {
        let queued = {
            let mut queue = self.lock();
            queue.closed = true;
            queue.take()
        };
        drop(queued);
    }

    /// Whether [`close`](Self::close) was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Asks the runtime to stop: [`stop_requested`](Self::stop_requested) says so from
    /// now on, and the runtime's thread is interrupted to notice.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.notify();
    }

    pub(crate) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Hands the key of every task woken from another thread to `wake`, then every job
    /// to `job`, in the order they came. Nothing is locked while they run.
    pub(crate) fn drain(&self, mut wake: impl FnMut(Key), mut job: impl FnMut(Job)) {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let (headers, jobs) = self.lock().take();
        for header in headers {
            header.in_inbox.store(false, Ordering::Release);
            wake(header.key);
        }
        jobs.into_iter().for_each(&mut job);
    }
}
