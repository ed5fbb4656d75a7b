//! A runtime as seen from another thread: [`Remote`], to start a task there or to ask it
//! to stop, and [`stop_requested`], for the tasks that answer the request.
//!
//! The seed has one thread; several cores run one runtime each, sharing nothing on the
//! message path. What they do share goes through each runtime's inbox (the one that
//! carries wakes from other threads): a lock and an eventfd write per request, nothing
//! per message.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use crate::context::{self, Core};
use crate::inbox::Inbox;
use crate::oneshot;
use crate::slab::Key;
use crate::task::JoinError;

/// A handle to a runtime, for other threads: it is `Send`, `Sync` and cheap to clone
/// (one reference count).
///
/// It does not keep the runtime alive. Once the runtime is dropped, [`spawn`] gives a
/// handle that reports [`JoinError::Cancelled`], and [`stop`] does nothing, whatever of
/// the runtime (a socket, a `Sleep`) is still held elsewhere.
///
/// [`spawn`]: Remote::spawn
/// [`stop`]: Remote::stop
///
/// # Examples
///
/// ```
/// let runtime = coop::Runtime::new()?;
/// let remote = runtime.remote();
/// let asked = std::thread::spawn(move || remote.spawn(|| async { 6 * 7 }));
/// let handle = asked.join().unwrap();
/// // The task runs when its runtime does, here:
/// assert_eq!(runtime.block_on(handle).unwrap(), 42);
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone)]
pub struct Remote {
    inbox: Weak<Inbox>,
}

impl Remote {
    pub(crate) fn new(inbox: &Arc<Inbox>) -> Remote {
        Remote {
            inbox: Arc::downgrade(inbox),
        }
    }

    /// Starts a task on the runtime: `make()` is called there, on its thread, and the
    /// future it returns runs as a task of that runtime (so neither it nor its output
    /// need be `Send` until the output is handed back). The task starts at the runtime's
    /// next OS poll, which this call interrupts.
    ///
    /// The returned [`RemoteHandle`] may be awaited on any thread and in any runtime. It
    /// gives the task's output, or why there is none: [`JoinError::Panicked`] if `make`
    /// or the future panicked, [`JoinError::Cancelled`] if the runtime was dropped first.
    /// Dropping the handle detaches the task.
    pub fn spawn<M, F>(&self, make: M) -> RemoteHandle<F::Output>
    where
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let (sender, receiver) = oneshot::channel();
        let handle = RemoteHandle { receiver };
        let job = Box::new(move || {
            // The task is started inside a second one, whose handle reports a panic
            // of `make` or of its future as that task's own.
            drop(crate::spawn(async move {
                let outcome = crate::spawn(async move { make().await }).await;
                sender.send(outcome);
            }));
        });
        // Refused (the runtime is gone), the job is dropped unrun, and with it the
        // sender: the handle reports the task cancelled.
        if let Some(inbox) = self.inbox.upgrade() {
            let _ = inbox.push_job(job);
        }
        handle
    }

    /// Asks the runtime to stop: from now on, [`stop_requested`] completes in it. What
    /// stopping means is up to its tasks (a server stops accepting, drains, and its
    /// `block_on` returns); nothing is cancelled by this call. Does nothing once the
    /// runtime is dropped; asking again changes nothing.
    pub fn stop(&self) {
        if let Some(inbox) = self.inbox.upgrade() {
            inbox.request_stop();
        }
    }
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote")
            .field(
                "alive",
                &self.inbox.upgrade().is_some_and(|inbox| !inbox.is_closed()),
            )
            .finish()
    }
}

/// A [`Remote`] to the runtime running on this thread, to hand to other threads.
///
/// # Panics
///
/// When called outside a coop runtime.
pub fn remote() -> Remote {
    context::with_core(|core| Remote::new(&core.inbox))
        .unwrap_or_else(|| panic!("coop::remote called outside a coop runtime"))
}

/// Completes once [`Remote::stop`] has been called for the runtime this runs on (at
/// once, if it was called before). Cancel safe: a wait that is dropped leaves nothing
/// behind. Any number of tasks may wait.
///
/// # Panics
///
/// When polled outside a coop runtime.
///
/// # Examples
///
/// ```
/// let runtime = coop::Runtime::new()?;
/// let remote = runtime.remote();
/// std::thread::spawn(move || remote.stop());
/// runtime.block_on(coop::stop_requested()); // returns once the other thread asked
/// # std::io::Result::Ok(())
/// ```
pub fn stop_requested() -> StopRequested {
    StopRequested { waiting: None }
}

/// The future of [`stop_requested`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct StopRequested {
    /// Where its waker waits, in the runtime it was polled in.
    waiting: Option<(Weak<Inbox>, Key)>,
}

impl Future for StopRequested {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        context::with_core(|core| self.poll_in(core, cx))
            .unwrap_or_else(|| panic!("coop::stop_requested polled outside a coop runtime"))
    }
}

impl StopRequested {
    fn poll_in(&mut self, core: &Core, cx: &mut Context<'_>) -> Poll<()> {
        if core.inbox.stop_requested() {
            self.forget(core);
            return Poll::Ready(());
        }
        // The flag is set before the runtime's thread is told, and only that thread wakes
        // these wakers: a request cannot slip between the check above and the store below.
        let mut waiters = core.stop_waiters.borrow_mut();
        if let Some((inbox, key)) = &self.waiting {
            if inbox.as_ptr() == Arc::as_ptr(&core.inbox) {
                if let Some(waker) = waiters.get_mut(*key) {
                    waker.clone_from(cx.waker());
                    return Poll::Pending;
                }
            }
        }
        let key = waiters.insert_with(|_| cx.waker().clone());
        drop(waiters);
        self.forget(core);
        self.waiting = Some((Arc::downgrade(&core.inbox), key));
        Poll::Pending
    }

    /// Takes its waker out of `core`'s list, if it is there.
    fn forget(&mut self, core: &Core) {
        if let Some((inbox, key)) = self.waiting.take() {
            if inbox.as_ptr() == Arc::as_ptr(&core.inbox) {
                core.stop_waiters.borrow_mut().remove(key);
            }
        }
    }
}

impl Drop for StopRequested {
    fn drop(&mut self) {
        if self.waiting.is_some() {
            // Outside its runtime (or with the runtime gone), there is nothing to take.
            let _ = context::with_core(|core| self.forget(core));
        }
    }
}

/// The outcome of a task started by [`Remote::spawn`]: a future, on any thread.
///
/// Resolves to the task's output, or to a [`JoinError`]. Dropping it detaches the task.
pub struct RemoteHandle<T> {
    receiver: oneshot::Receiver<T>,
}

impl<T> Future for RemoteHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.receiver).poll(cx)
    }
}

impl<T> fmt::Debug for RemoteHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteHandle").finish_non_exhaustive()
    }
}
