//! How a task gets back into the ready queue through a [`Waker`].
//!
//! In the seed, a socket that turns ready moves its generator from `recv_wait` back to
//! `tasks`. Here whoever holds a task's waker (a timer, a channel, a combinator, another
//! thread) calls [`Waker::wake`], which lands in [`Header`]'s `wake_by_ref`:
//!
//! * on the runtime's own thread, while it runs, the task is scheduled at once: no lock,
//!   no system call;
//! * anywhere else (a `Waker` is `Send`), the header goes into the runtime's inbox, and
//!   the OS poll is interrupted so that the runtime's thread picks it up.
//!
//! A wake is idempotent: a task sits in the queue (and in the inbox) at most once,
//! however often it is woken before it runs. Sockets do not come through here for the
//! tasks parked on them: they keep the task's key, and the runtime polls it directly.

use std::sync::Arc;
use std::task::{Wake, Waker};

use crate::context;
use crate::inbox::{Header, Inbox};
use crate::slab::Key;

/// The waker of task `key` of the runtime that owns `inbox`.
pub(crate) fn waker(key: Key, inbox: &Arc<Inbox>) -> Waker {
    Waker::from(Arc::new(Header::new(key, inbox)))
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !context::wake_local(self) {
            self.send();
        }
    }
}
