//! The ready queue, `spawn`, and the run loop: the seed's `tasks` deque and `run()`.
//!
//! The seed's loop, and this one:
//!
//! ```text
//! while any task exists:                 loop {
//!     while not tasks:                       a round: pop and poll each task that was
//!         select(recv_wait, send_wait)         ready when the round began (FIFO)
//!         move ready ones to tasks           park: wait in the OS poll, for no time if
//!     task = tasks.popleft()                   tasks are ready, until the next timer
//!     why, what = task.send(None)              if one is pending, forever otherwise;
//!     park task in recv_wait / send_wait       wake the tasks whose sockets turned
//!                                              ready or whose timers fired
//!                                        }
//! ```
//!
//! A round polls only the tasks that were ready when it began, so tasks that keep waking
//! themselves cannot keep the OS poll from running: sockets are heard at least once per
//! round.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::budget;
use crate::reactor::Reactor;
use crate::slab::{Key, Slab};
use crate::task::{JoinHandle, Task};
use crate::time::{self, Timers};
use crate::trace::{self, Event, TaskId};
use crate::waker::{Header, Inbox};

/// The key `block_on`'s own future wakes by. Never a task's: slab indices stay below
/// `u32::MAX`.
const ROOT: Key = Key::from_token(usize::MAX);

/// An entry of the ready queue: a task, or `None` for `block_on`'s own future (which is
/// not `'static`, so it cannot be a task).
type Runnable = Option<Rc<Task>>;

/// Everything one runtime owns; reached through [`CURRENT`] while it runs.
struct Core {
    /// The ready queue while the runtime is not running. While it runs, the queue lives
    /// in [`READY`].
    ready: RefCell<VecDeque<Runnable>>,
    /// `block_on`'s future is in the ready queue.
    root_queued: Cell<bool>,
    /// Every live task.
    tasks: RefCell<Slab<Rc<Task>>>,
    reactor: Rc<Reactor>,
    timers: Rc<Timers>,
    inbox: Arc<Inbox>,
}

thread_local! {
    /// The runtime running on this thread, if any.
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
    /// Which runtime that is, by the address of its inbox: compared, never followed.
    static RUNNING: Cell<*const Inbox> = const { Cell::new(ptr::null()) };
    /// The running runtime's ready queue, moved here for the length of `block_on` so a
    /// wake reaches it in one thread-local access.
    static READY: RefCell<VecDeque<Runnable>> = const { RefCell::new(VecDeque::new()) };
    /// The key of the task being polled, so a socket can hold the task itself instead of
    /// a waker.
    static POLLING: Cell<Option<Key>> = const { Cell::new(None) };
    /// The number the next task gets in traces.
    static NEXT_ID: Cell<u64> = const { Cell::new(1) };
}

fn with_current<R>(f: impl FnOnce(&Rc<Core>) -> R) -> Option<R> {
    CURRENT
        .try_with(|current| current.borrow().as_ref().map(f))
        .ok()
        .flatten()
}

/// Puts a task (or, for `None`, `block_on`'s future) at the back of the ready queue.
#[inline]
pub(crate) fn push(runnable: Runnable) {
    READY.with_borrow_mut(|ready| ready.push_back(runnable));
}

/// Wakes the task `key` if the runtime that owns `inbox` runs on this thread; `false` if
/// it does not (the caller goes through the inbox).
pub(crate) fn wake_local(inbox: &Arc<Inbox>, key: Key) -> bool {
    let mine = RUNNING
        .try_with(|running| ptr::eq(running.get(), Arc::as_ptr(inbox)))
        .unwrap_or(false);
    if mine {
        with_current(|core| core.wake(key));
    }
    mine
}

/// The task being polled, if `waker` is its own waker.
#[inline]
pub(crate) fn polling_task(waker: &Waker) -> Option<Rc<Task>> {
    let key = POLLING.get()?;
    with_current(|core| core.tasks.borrow().get(key).cloned())
        .flatten()
        .filter(|task| task.waker().will_wake(waker))
}

pub(crate) fn current_reactor() -> io::Result<Rc<Reactor>> {
    with_current(|core| Rc::clone(&core.reactor)).ok_or_else(|| {
        io::Error::other("coop sockets must be created inside a coop runtime (in block_on)")
    })
}

pub(crate) fn current_timers() -> Option<Rc<Timers>> {
    with_current(|core| Rc::clone(&core.timers))
}

/// Starts a task: the seed's `tasks.append(gen)`.
///
/// The task goes to the back of the ready queue and runs when the current task yields.
/// Awaiting the returned [`JoinHandle`] gives its output; dropping the handle lets it run
/// on detached.
///
/// # Panics
///
/// When called outside a coop runtime (outside [`block_on`] and the tasks it runs).
///
/// # Examples
///
/// ```
/// let answer = coop::block_on(async {
///     let task = coop::spawn(async { 6 * 7 });
///     task.await
/// });
/// assert_eq!(answer, 42);
/// ```
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    with_current(|core| core.spawn(future, None))
        .unwrap_or_else(|| panic!("coop::spawn called outside a coop runtime"))
}

/// [`spawn`], with a name that [traces](crate::trace) show for the task (e.g. `conn
/// 127.0.0.1:50412`). The name is not kept: it costs nothing when nobody traces, and
/// callers that build it with `format!` can check [`trace::enabled`] first.
///
/// # Panics
///
/// When called outside a coop runtime.
pub fn spawn_named<F>(name: &str, future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    with_current(|core| core.spawn(future, Some(name)))
        .unwrap_or_else(|| panic!("coop::spawn_named called outside a coop runtime"))
}

/// The task being polled, for traces.
pub(crate) fn polling_id() -> Option<TaskId> {
    let key = POLLING.get()?;
    with_current(|core| core.tasks.borrow().get(key).map(|task| task.id())).flatten()
}

impl Core {
    fn spawn<F>(&self, future: F, name: Option<&str>) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let id = TaskId(NEXT_ID.get());
        NEXT_ID.set(id.0 + 1);
        let mut made = None;
        self.tasks.borrow_mut().insert_with(|key| {
            let (task, join) = Task::new(key, id, &self.inbox, future);
            made = Some((Rc::clone(&task), join));
            task
        });
        let (task, join) = made.unwrap_or_else(|| unreachable!("insert_with calls its closure"));
        trace::emit(|| Event::Spawn { task: id, name });
        task.schedule();
        join
    }

    /// Schedules the task `key` (skipped if it has finished), or `block_on`'s future.
    fn wake(&self, key: Key) {
        if key == ROOT {
            if !self.root_queued.replace(true) {
                push(None);
            }
        } else if let Some(task) = self.tasks.borrow().get(key) {
            task.schedule();
        }
    }

    /// Polls one task, and forgets it once it has finished.
    #[inline]
    fn run(&self, task: Rc<Task>) {
        budget::reset();
        POLLING.set(Some(task.key()));
        trace::emit(|| Event::Run { task: task.id() });
        let finished = task.poll();
        POLLING.set(None);
        if finished {
            trace::emit(|| Event::Finish { task: task.id() });
            let entry = self.tasks.borrow_mut().remove(task.key());
            // Dropped outside the borrow: a task's destructors may spawn or wake.
            drop(entry);
        }
    }

    /// Waits in the OS poll, then wakes what the OS, the timers and other threads made
    /// ready.
    fn park(&self) {
        let deadline = self.timers.next_deadline();
        let at_once = !READY.with_borrow(VecDeque::is_empty);
        let woken = match self.reactor.poll(at_once, deadline) {
            Ok(woken) => woken,
            // epoll_wait fails only on a bad descriptor or argument: a bug, not a load.
            Err(e) => panic!("coop: the OS poll failed: {e}"),
        };
        time::forget_now();
        if woken.timers {
            self.timers.fire(time::now());
        }
        if woken.inbox {
            self.inbox.drain(|key| self.wake(key));
        }
    }
}

/// A coop runtime: a ready queue, a reactor and timers, run by [`Runtime::block_on`] on
/// the calling thread.
///
/// Tasks spawned on it stay with it between calls to `block_on`, and are dropped with it.
///
/// # Examples
///
/// ```
/// let runtime = coop::Runtime::new()?;
/// let n = runtime.block_on(async { coop::spawn(async { 1 }).await + 1 });
/// assert_eq!(n, 2);
/// # std::io::Result::Ok(())
/// ```
pub struct Runtime {
    core: Rc<Core>,
}

impl Runtime {
    /// Creates a runtime. Fails only if the OS refuses a poll instance (out of file
    /// descriptors or memory).
    pub fn new() -> io::Result<Self> {
        let reactor = Reactor::new()?;
        let inbox = Arc::new(Inbox::new(reactor.inbox_waker()?));
        Ok(Runtime {
            core: Rc::new(Core {
                ready: RefCell::new(VecDeque::new()),
                root_queued: Cell::new(false),
                tasks: RefCell::new(Slab::new()),
                reactor: Rc::new(reactor),
                timers: Rc::new(Timers::new()),
                inbox,
            }),
        })
    }

    /// Runs `future` on this thread until it completes, running the tasks it spawns
    /// meanwhile: the seed's `run()`, with `future` as the program's main task.
    ///
    /// Returns as soon as `future` completes. Tasks still unfinished stay with the
    /// runtime (a later `block_on` runs them on) and are dropped with it; to wait for a
    /// task, await its [`JoinHandle`].
    ///
    /// A panic in any task unwinds out of `block_on`; drop the runtime after one.
    ///
    /// # Panics
    ///
    /// When called from inside a coop runtime (a task cannot block its own thread).
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _enter = Enter::new(&self.core);
        let core = &*self.core;
        let mut root = pin!(future);
        let root_waker = Header::waker(ROOT, &core.inbox);
        core.wake(ROOT);
        loop {
            let round = READY.with_borrow(VecDeque::len);
            for _ in 0..round {
                match READY.with_borrow_mut(VecDeque::pop_front) {
                    Some(Some(task)) => core.run(task),
                    Some(None) => {
                        core.root_queued.set(false);
                        budget::reset();
                        let mut cx = Context::from_waker(&root_waker);
                        if let Poll::Ready(output) = root.as_mut().poll(&mut cx) {
                            return output;
                        }
                    }
                    None => break,
                }
            }
            core.park();
        }
    }

    /// Counts of the runtime's state, for tests and diagnostics.
    pub fn stats(&self) -> Stats {
        self.core.stats()
    }
}

/// The [`Stats`] of the runtime running on this thread, if any (for a task that reports
/// on its own runtime, e.g. a metrics endpoint).
pub fn stats() -> Option<Stats> {
    with_current(|core| core.stats())
}

impl Core {
    fn stats(&self) -> Stats {
        let running = RUNNING.with(|r| ptr::eq(r.get(), Arc::as_ptr(&self.inbox)));
        let ready = if running {
            READY.with_borrow(VecDeque::len)
        } else {
            self.ready.borrow().len()
        };
        let (parked_read, parked_write) = self.reactor.parked();
        Stats {
            tasks: self.tasks.borrow().len(),
            ready,
            parked_read,
            parked_write,
            sockets: self.reactor.len(),
            timers: self.timers.len(),
        }
    }
}

/// A snapshot of a [`Runtime`]'s state, from [`Runtime::stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Live tasks (not counting `block_on`'s own future).
    pub tasks: usize,
    /// Entries in the ready queue.
    pub ready: usize,
    /// Tasks parked in a read waiting area (the seed's `recv_wait`).
    pub parked_read: usize,
    /// Tasks parked in a write waiting area (the seed's `send_wait`).
    pub parked_write: usize,
    /// Sockets registered with the reactor.
    pub sockets: usize,
    /// Pending timers.
    pub timers: usize,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // Tasks hold sockets and timers that point back at the core, and sockets may hold
        // their task: cancelling every future breaks those cycles. Drained first, dropped
        // after, so no borrow is held while destructors run.
        let tasks: Vec<_> = self.core.tasks.borrow_mut().drain().collect();
        for task in &tasks {
            task.cancel();
        }
        drop(tasks);
        self.core.ready.borrow_mut().clear();
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Makes a runtime current on this thread for the length of a `block_on`, its ready
/// queue moved into [`READY`].
struct Enter {
    core: Rc<Core>,
}

impl Enter {
    fn new(core: &Rc<Core>) -> Self {
        CURRENT.with(|current| {
            let mut current = current.borrow_mut();
            assert!(
                current.is_none(),
                "coop: block_on called from inside a coop runtime; spawn the future instead"
            );
            *current = Some(Rc::clone(core));
        });
        RUNNING.set(Arc::as_ptr(&core.inbox));
        READY.with_borrow_mut(|ready| std::mem::swap(ready, &mut core.ready.borrow_mut()));
        Enter {
            core: Rc::clone(core),
        }
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let _ = READY.try_with(|ready| {
            std::mem::swap(&mut *ready.borrow_mut(), &mut self.core.ready.borrow_mut())
        });
        let _ = RUNNING.try_with(|running| running.set(ptr::null()));
        let _ = CURRENT.try_with(|current| current.borrow_mut().take());
    }
}

/// Runs `future` on a new [`Runtime`] and returns its output: the seed's `run()`.
///
/// The runtime is dropped on return, and with it any task still unfinished; see
/// [`Runtime::block_on`].
///
/// # Panics
///
/// When the OS refuses a poll instance (use [`Runtime::new`] to handle that), or when
/// called from inside a coop runtime.
///
/// # Examples
///
/// ```
/// let greeting = coop::block_on(async { "Hello" });
/// assert_eq!(greeting, "Hello");
/// ```
pub fn block_on<F: Future>(future: F) -> F::Output {
    let runtime = Runtime::new().unwrap_or_else(|e| panic!("coop: cannot create a runtime: {e}"));
    runtime.block_on(future)
}
