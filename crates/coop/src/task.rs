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

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use pin_project_lite::pin_project;

use crate::scheduler;
use crate::slab::Key;
use crate::trace::TaskId;
use crate::waker::{Header, Inbox};

/// A spawned future with its waker.
///
/// Shared (`Rc`): the task table holds it, and so does the ready queue while it waits
/// to run, and a socket while it waits there. Nothing in it moves while it is polled, and
/// the table stays free for the task to spawn into.
pub(crate) struct Task {
    key: Key,
    /// The task's number in traces.
    id: TaskId,
    /// In the ready queue already: a task sits there at most once.
    queued: Cell<bool>,
    future: RefCell<Pin<Box<dyn Future<Output = ()>>>>,
    /// Built once: polling a task clones nothing.
    waker: Waker,
}

impl Task {
    /// Wraps `future` so its output goes to the returned [`JoinHandle`].
    pub(crate) fn new<F>(
        key: Key,
        id: TaskId,
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
        let future = Box::pin(Completing { future, join });
        let task = Task {
            key,
            id,
            queued: Cell::new(false),
            future: RefCell::new(future),
            waker: Header::waker(key, inbox),
        };
        (Rc::new(task), handle)
    }

    pub(crate) fn key(&self) -> Key {
        self.key
    }

    pub(crate) fn id(&self) -> TaskId {
        self.id
    }

    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Puts the task at the back of the ready queue, unless it is there already.
    #[inline]
    pub(crate) fn schedule(self: &Rc<Self>) {
        if !self.queued.replace(true) {
            scheduler::push(Some(Rc::clone(self)));
        }
    }

    /// Polls the task once; `true` once it has finished.
    #[inline]
    pub(crate) fn poll(&self) -> bool {
        self.queued.set(false);
        let mut cx = Context::from_waker(&self.waker);
        self.future.borrow_mut().as_mut().poll(&mut cx).is_ready()
    }

    /// Drops the future unfinished, and with it every socket and handle it holds (which
    /// may hold the task in turn: this is what breaks such cycles).
    pub(crate) fn cancel(&self) {
        let future = self.future.replace(Box::pin(std::future::pending()));
        drop(future);
    }
}

pin_project! {
    /// A spawned future that hands its output to the `JoinHandle` when it completes.
    ///
    /// A struct rather than an `async` block: an async block that awaits a captured
    /// future stores it twice (the capture and the awaited value), and every connection's
    /// handler would pay for it in memory.
    struct Completing<F: Future> {
        #[pin]
        future: F,
        join: Rc<RefCell<Join<F::Output>>>,
    }
}

impl<F: Future> Future for Completing<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let output = match this.future.poll(cx) {
            Poll::Ready(output) => output,
            Poll::Pending => return Poll::Pending,
        };
        let previous = this.join.replace(Join::Finished(output));
        if let Join::Running(Some(waiter)) = previous {
            waiter.wake();
        }
        Poll::Ready(())
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
/// detaches the task, which runs on for as long as its runtime runs (the seed's tasks
/// have no handle at all: every one of them is detached).
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
