//! A spawned task and the handle that waits for its output.
//!
//! A task is the seed's generator object: a future, boxed so the ready queue can hold
//! tasks of every type, with a [`Waker`] built once at spawn so that polling it costs no
//! allocation and no reference count.
//!
//! ```text
//!   spawn ──► queued ──► running ──► Ready: output to the JoinHandle, task freed
//!               ▲           │
//!               │           ▼ Pending
//!               └── wake ── parked (in a waiting area: a socket, a timer, a JoinHandle)
//! ```

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::slab::Key;
use crate::waker::{Header, Inbox};

/// A spawned future with its waker.
///
/// Shared (`Rc`) between the task table and the run loop while it is polled, so that the
/// table is free for the task to spawn into, and the task never moves.
pub(crate) struct Task {
    future: RefCell<Pin<Box<dyn Future<Output = ()>>>>,
    header: Arc<Header>,
    waker: Waker,
}

impl Task {
    /// Wraps `future` so its output goes to the returned [`JoinHandle`].
    pub(crate) fn new<F>(
        key: Key,
        inbox: &Arc<Inbox>,
        future: F,
    ) -> (Rc<Task>, JoinHandle<F::Output>)
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let join = Rc::new(RefCell::new(Join::Running(None)));
        let handle = JoinHandle {
            join: Rc::clone(&join),
        };
        let future = Box::pin(async move {
            let output = future.await;
            let previous = join.replace(Join::Finished(output));
            if let Join::Running(Some(waiter)) = previous {
                waiter.wake();
            }
        });
        let header = Arc::new(Header::new_queued(key, inbox));
        let waker = Waker::from(Arc::clone(&header));
        let task = Task {
            future: RefCell::new(future),
            header,
            waker,
        };
        (Rc::new(task), handle)
    }

    /// Polls the task once; `true` once it has finished.
    pub(crate) fn poll(&self) -> bool {
        self.header.unqueue();
        let mut cx = Context::from_waker(&self.waker);
        self.future.borrow_mut().as_mut().poll(&mut cx).is_ready()
    }
}

enum Join<T> {
    /// The task has not finished; the waker of whoever awaits the handle.
    Running(Option<Waker>),
    Finished(T),
    /// The output went to the awaiting task.
    Taken,
}

/// Awaits a spawned task's output.
///
/// Returned by [`spawn`](crate::spawn). Awaiting it gives the task's output; dropping it
/// detaches the task, which runs on to its end all the same (the seed's tasks have no
/// handle at all: every one of them is detached).
///
/// # Examples
///
/// ```
/// let sum = coop::block_on(async {
///     let a = coop::spawn(async { 20 });
///     let b = coop::spawn(async { 22 });
///     a.await + b.await
/// });
/// assert_eq!(sum, 42);
/// ```
#[must_use = "dropping a JoinHandle detaches the task; `let _ = spawn(..)` says so"]
pub struct JoinHandle<T> {
    join: Rc<RefCell<Join<T>>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task has finished (its output may already have been taken).
    pub fn is_finished(&self) -> bool {
        !matches!(*self.join.borrow(), Join::Running(_))
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let mut join = self.join.borrow_mut();
        match &mut *join {
            Join::Running(waiter) => {
                match waiter {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *waiter = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            Join::Finished(_) => match std::mem::replace(&mut *join, Join::Taken) {
                Join::Finished(output) => Poll::Ready(output),
                _ => unreachable!(),
            },
            Join::Taken => panic!("JoinHandle polled after it returned the output"),
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}
