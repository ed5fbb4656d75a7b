//! A spawned task: its future and, once it ends, its outcome for the [`JoinHandle`].
//!
//! A task is one allocation, shared by the runtime's task table (as `Rc<dyn Run>`) and
//! its `JoinHandle` (as `Rc<dyn Join<T>>`): the future while it runs, then its output,
//! the payload of its panic, or the news that it was cancelled.
//!
//! ```text
//!   Running(future) ──poll: Ready───► Finished(output) ─┐
//!        │          ──poll: panic───► Panicked(payload) ─┼─ awaited ──► Taken
//!        └───────── cancelled ──────► Cancelled ─────────┘
//! ```
//!
//! The future is dropped the moment the task leaves `Running`: its sockets, guards and
//! captured handles go with it, whoever still holds the `JoinHandle`. When the task is
//! polled and scheduled is the runtime's business (`context.rs` draws that half).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A task, as traces name it: numbered from 1 in the order of spawning, per runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId(pub u64);

/// The runtime's side of a task.
pub(crate) trait Run {
    /// Polls the future once, or drops it if the task was cancelled. Returns `true` once
    /// the task is over. A panic of the future unwinds out of here; the runtime catches
    /// it and calls [`fail`](Run::fail).
    fn run(&self) -> bool;

    /// The future panicked with `payload`: drops it, and keeps the payload for the
    /// `JoinHandle`.
    fn fail(&self, payload: Box<dyn Any + Send>);

    /// The task's waker, made once at spawn: polling a task clones nothing.
    fn waker(&self) -> &Waker;

    /// Drops the future unfinished, now (the runtime is going away).
    fn cancel_now(&self);
}

/// The `JoinHandle`'s side of a task.
trait Join<T> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>>;
    fn is_finished(&self) -> bool;
    fn abort(&self);
}

enum Stage<F: Future> {
    Running(F),
    Finished(F::Output),
    Panicked(Box<dyn Any + Send>),
    Cancelled,
    Taken,
}

struct Task<F: Future> {
    waker: Waker,
    /// The `JoinHandle` asked for cancellation: the next run drops the future.
    cancel: Cell<bool>,
    /// Whoever awaits the `JoinHandle`.
    joiner: Cell<Option<Waker>>,
    /// The stage has left `Running`. Asked instead of the stage itself: while the future
    /// is suspended it may hold references into itself (an async block borrowing its own
    /// locals across an `.await`), and a reference to the whole stage, even to read its
    /// discriminant, would claim that memory for the reader (Miri's Stacked Borrows
    /// reports it; `tests/task.rs` checks it).
    over: Cell<bool>,
    stage: RefCell<Stage<F>>,
}

/// Makes a task of `future`, woken by `waker`: the runtime's handle on it, and the
/// `JoinHandle`.
pub(crate) fn new<F>(future: F, waker: Waker) -> (Rc<dyn Run>, JoinHandle<F::Output>)
where
    F: Future + 'static,
    F::Output: 'static,
{
    let task = Rc::new(Task {
        waker,
        cancel: Cell::new(false),
        joiner: Cell::new(None),
        over: Cell::new(false),
        stage: RefCell::new(Stage::Running(future)),
    });
    let join = JoinHandle {
        task: Rc::clone(&task) as Rc<dyn Join<F::Output>>,
    };
    (task, join)
}

impl<F: Future> Task<F> {
    /// Ends the stage `Running` with `end` (dropping the future in place), then tells
    /// whoever awaits the `JoinHandle`.
    fn finish(&self, stage: &mut Stage<F>, end: Stage<F>) {
        // If the future's destructor panics, the assignment still completes (the new
        // value is written during the unwind); the panic is caught and reported instead.
        let dropped = catch_unwind(AssertUnwindSafe(|| *stage = end));
        if let Err(payload) = dropped {
            *stage = Stage::Panicked(payload);
        }
        self.over.set(true);
    }

    /// Ends a running task with `end`, from outside its poll.
    fn end(&self, end: Stage<F>) {
        if self.over.get() {
            return;
        }
        let Ok(mut stage) = self.stage.try_borrow_mut() else {
            return;
        };
        self.finish(&mut stage, end);
        drop(stage);
        self.wake_joiner();
    }

    fn wake_joiner(&self) {
        if let Some(joiner) = self.joiner.take() {
            joiner.wake();
        }
    }
}

impl<F: Future> Run for Task<F> {
    fn run(&self) -> bool {
        // Only the runtime runs a task, never from inside its own poll: the stage is free.
        if self.over.get() {
            return true;
        }
        let Ok(mut stage) = self.stage.try_borrow_mut() else {
            return false;
        };
        let Stage::Running(future) = &mut *stage else {
            return true;
        };
        if self.cancel.get() {
            self.finish(&mut stage, Stage::Cancelled);
        } else {
            // SAFETY: a `Task` lives only in the `Rc` that `new` made and is never moved
            // out of it (no `Rc::try_unwrap`, no `get_mut`, no `&mut Task` anywhere), so
            // `stage` keeps its address for the life of the allocation. A `Running`
            // stage is left only by assignment through `finish`, which drops the future
            // in place before anything else is written there; nothing moves a future
            // out of its stage. So the future is pinned, as `Pin` requires.
            // (Tested: `tests/task.rs`, a future that checks its own address.)
            #[allow(unsafe_code)]
            let future = unsafe { Pin::new_unchecked(future) };
            match future.poll(&mut Context::from_waker(&self.waker)) {
                Poll::Pending => return false,
                Poll::Ready(output) => self.finish(&mut stage, Stage::Finished(output)),
            }
        }
        drop(stage);
        self.wake_joiner();
        true
    }

    fn waker(&self) -> &Waker {
        &self.waker
    }

    fn cancel_now(&self) {
        self.end(Stage::Cancelled);
    }

    fn fail(&self, payload: Box<dyn Any + Send>) {
        self.end(Stage::Panicked(payload));
    }
}

impl<F: Future> Join<F::Output> for Task<F> {
    fn poll_join(&self, cx: &mut Context<'_>) -> Poll<Result<F::Output, JoinError>> {
        // Not over, or borrowed (the future is being dropped right now): it has not ended.
        let ended = match self.stage.try_borrow_mut() {
            Ok(mut stage) if self.over.get() => std::mem::replace(&mut *stage, Stage::Taken),
            _ => {
                let joiner = self.joiner.take();
                match joiner {
                    Some(joiner) if joiner.will_wake(cx.waker()) => self.joiner.set(Some(joiner)),
                    _ => self.joiner.set(Some(cx.waker().clone())),
                }
                return Poll::Pending;
            }
        };
        Poll::Ready(match ended {
            Stage::Finished(output) => Ok(output),
            Stage::Panicked(payload) => Err(JoinError::Panicked(payload)),
            Stage::Cancelled => Err(JoinError::Cancelled),
            Stage::Taken => panic!("coop: JoinHandle polled after it returned the outcome"),
            Stage::Running(_) => unreachable!("checked above"),
        })
    }

    fn is_finished(&self) -> bool {
        self.over.get()
    }

    fn abort(&self) {
        if !self.is_finished() {
            self.cancel.set(true);
            self.waker.wake_by_ref();
        }
    }
}

/// Awaits a spawned task's outcome: its output, or why there is none.
///
/// Returned by [`spawn`](crate::spawn). Awaiting it gives `Ok(output)` once the task has
/// returned, or a [`JoinError`]: the task panicked (the panic stays in its task, as with
/// [`std::thread::JoinHandle::join`]) or was cancelled. A future that returned but
/// whose destructor then panicked counts as panicked: its output is dropped.
///
/// Dropping the handle *detaches* the task: it runs on for as long as its runtime runs
/// (the seed's tasks have no handle at all: every one of them is detached).
/// [`abort`](Self::abort) cancels it.
///
/// # Examples
///
/// ```
/// let sum = coop::block_on(async {
///     let a = coop::spawn(async { 20 });
///     let b = coop::spawn(async { 22 });
///     Ok::<_, coop::JoinError>(a.await? + b.await?)
/// })?;
/// assert_eq!(sum, 42);
/// # Ok::<(), coop::JoinError>(())
/// ```
#[must_use = "dropping a JoinHandle detaches the task; `let _ = spawn(..)` says so"]
pub struct JoinHandle<T> {
    task: Rc<dyn Join<T>>,
}

impl<T> JoinHandle<T> {
    /// Whether the task has ended: returned, panicked or been cancelled.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Cancels the task: its future is dropped, unfinished, the next time its runtime
    /// runs, and with it everything the future holds (sockets close, timers go). Awaiting
    /// the handle then gives [`JoinError::Cancelled`], unless the task had already ended.
    ///
    /// A task that cancels itself runs on to its next `.await`.
    ///
    /// # Examples
    ///
    /// ```
    /// coop::block_on(async {
    ///     let forever = coop::spawn(std::future::pending::<()>());
    ///     forever.abort();
    ///     assert!(forever.await.unwrap_err().is_cancelled());
    /// });
    /// ```
    pub fn abort(&self) {
        // The task is woken, and its runtime drops the future when it takes it from the
        // ready queue: never in the middle of someone else's poll.
        self.task.abort();
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    /// # Panics
    ///
    /// When polled again after it returned `Ready`.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T, JoinError>> {
        self.task.poll_join(cx)
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a task gave no output: it panicked, or it was cancelled.
pub enum JoinError {
    /// The task was cancelled ([`JoinHandle::abort`], or its runtime was dropped) before
    /// it returned.
    Cancelled,
    /// The task panicked; the payload is what `panic!` was given, as
    /// [`std::thread::JoinHandle::join`] returns it.
    Panicked(Box<dyn Any + Send>),
}

impl JoinError {
    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, JoinError::Cancelled)
    }

    /// Whether the task panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, JoinError::Panicked(_))
    }

    /// The panic's message, if the task panicked with a string (as `panic!("...")` does).
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            JoinError::Panicked(payload) => panic_message(payload.as_ref()),
            JoinError::Cancelled => None,
        }
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("Cancelled"),
            JoinError::Panicked(_) => f
                .debug_tuple("Panicked")
                .field(&self.panic_message().unwrap_or("..."))
                .finish(),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JoinError::Cancelled => f.write_str("the task was cancelled"),
            JoinError::Panicked(_) => match self.panic_message() {
                Some(message) => write!(f, "the task panicked: {message}"),
                None => f.write_str("the task panicked"),
            },
        }
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for io::Error {
    fn from(e: JoinError) -> io::Error {
        io::Error::other(e.to_string())
    }
}
