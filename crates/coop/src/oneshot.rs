//! One value, handed once from any thread to whoever awaits it on any other: how a task
//! started by [`Remote::spawn`](crate::Remote::spawn) or a closure run by
//! [`spawn_blocking`](crate::spawn_blocking) gives its outcome back.
//!
//! A lock and a waker: this is crossed once per request, never per message.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use crate::task::JoinError;

/// A channel for one outcome. Dropped unsent, the [`Sender`] reports
/// [`JoinError::Cancelled`].
pub(crate) fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let slot = Arc::new(Mutex::new(Slot {
        outcome: None,
        settled: false,
        waker: None,
    }));
    (
        Sender {
            slot: Arc::clone(&slot),
        },
        Receiver { slot },
    )
}

struct Slot<T> {
    /// `Some` once settled, until the receiver takes it.
    outcome: Option<Result<T, JoinError>>,
    /// The outcome was set (and may have been taken since): it is set once.
    settled: bool,
    waker: Option<Waker>,
}

/// The receiving end: a future of the outcome, on any thread.
pub(crate) struct Receiver<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Nothing panics while the lock is held: a poisoned slot is whole.
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = slot.outcome.take() {
            return Poll::Ready(outcome);
        }
        if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            slot.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The sending end.
pub(crate) struct Sender<T> {
    slot: Arc<Mutex<Slot<T>>>,
}

impl<T> Sender<T> {
    pub(crate) fn send(self, outcome: Result<T, JoinError>) {
        self.settle(outcome);
    }

    fn settle(&self, outcome: Result<T, JoinError>) {
        let waker = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            if slot.settled {
                return;
            }
            slot.settled = true;
            slot.outcome = Some(outcome);
            slot.waker.take()
        };
        // Woken with no lock held: the waker may run anything.
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.settle(Err(JoinError::Cancelled));
    }
}
