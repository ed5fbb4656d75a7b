//! The run loop, `spawn`, and the [`Runtime`]: the seed's `tasks` deque and `run()`.
//!
//! The seed's loop, and this one:
//!
//! ```text
//! while any task exists:                 loop {
//!     while not tasks:                       a round: take the ready queue as it is,
//!         select(recv_wait, send_wait)         and poll each task in it, in order
//!         move ready ones to tasks           park: wait in the OS poll, for no time if
//!     task = tasks.popleft()                   tasks are ready, until the next timer
//!     why, what = task.send(None)              if one is pending, forever otherwise;
//!     park task in recv_wait / send_wait       poll each task whose socket turned
//!                                              ready, there and then; schedule the
//!                                              tasks whose timers fired, or that
//!                                              other threads woke
//!                                        }
//! ```
//!
//! A round polls only the tasks that were ready when it began (tasks woken during the
//! round wait for the next), so tasks that keep waking themselves cannot keep the OS
//! poll from running: sockets are heard at least once per round. A task that its socket
//! wakes skips the queue, the seed's `tasks.append` and `popleft` both: it is the hot
//! path of every server, and the queue would cost a push, a round and a second look-up
//! per message. It is polled once for each event that wakes it: a task waiting on two
//! sockets that turn ready in one batch is polled twice, the second time for the second
//! socket (whose readiness the first poll could not yet see).

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use crate::context::{self, Core, ROOT, Slot};
use crate::inbox::Inbox;
use crate::reactor::{Direction, Events, Reactor};
use crate::slab::{Key, Slab};
use crate::task::{self, JoinHandle, Run, TaskId};
use crate::timers::Timers;
use crate::trace::{self, Area, Event};
use crate::waker;

/// Starts a task: the seed's `tasks.append(gen)`.
///
/// The task goes to the back of the ready queue and runs when the current task yields.
/// Awaiting the returned [`JoinHandle`] gives its outcome; dropping the handle lets it
/// run on, detached. A panic in the task stays in the task: the runtime and the other
/// tasks go on, and the handle reports it.
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
/// assert_eq!(answer.unwrap(), 42);
/// ```
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    context::with_core(|core| spawn_on(core, future, None))
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
    context::with_core(|core| spawn_on(core, future, Some(name)))
        .unwrap_or_else(|| panic!("coop::spawn_named called outside a coop runtime"))
}

fn spawn_on<F>(core: &Core, future: F, name: Option<&str>) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let id = TaskId(core.next_id.get());
    core.next_id.set(id.0 + 1);
    if core.closing.get() {
        // Spawned by a destructor while the runtime is dropped: it would never run.
        let (task, join) = task::new(future, Waker::noop().clone());
        task.cancel_now();
        return join;
    }
    let mut join = None;
    let key = core.tasks.borrow_mut().insert_with(|key| {
        let (task, handle) = task::new(future, waker::waker(key, &core.inbox));
        join = Some(handle);
        Slot {
            scheduled: Cell::new(false),
            id,
            waker: task.waker().data(),
            task,
        }
    });
    trace::emit(|| Event::Spawn { task: id, name });
    core.wake(key);
    join.unwrap_or_else(|| unreachable!("insert_with calls its closure"))
}

/// Polls task `key` once, and forgets it once it is over. `queued`: the key comes from
/// the ready queue, where a task is exactly while it is `Scheduled`; otherwise its socket
/// just woke it, and a task that is `Scheduled` already waits for its turn in the queue.
///
/// A panic in the task stays here: the task is over, its handle says why, and the caller
/// goes on.
#[inline(always)]
fn run(core: &Core, key: Key, queued: bool) {
    let (task, id) = {
        let tasks = core.tasks.borrow();
        let Some(slot) = tasks.get(key) else { return };
        if slot.scheduled.get() != queued {
            return;
        }
        // Idle while it is polled: a wake meanwhile queues it for the next round.
        slot.scheduled.set(false);
        context::set_current(key, slot.id, slot.waker);
        (Rc::as_ptr(&slot.task), slot.id)
    };
    // SAFETY: `task` points into the `Rc` allocation held by the slot of `key`, and that
    // slot stays in the table until this function removes it below: a slot leaves only
    // here and in `fail` (both after the task's poll, called from here), and in
    // `Runtime::drop` (which cannot run while `block_on` borrows the runtime). The
    // table's storage may move while the task runs (a spawn grows it), but the `Rc`
    // allocation does not. So the reference is valid until the removal, and it is not
    // used after. Not a clone of the `Rc`: that cost about 10 instructions per echo
    // (measured). `tests/task.rs` grows the table from inside a running task under Miri.
    #[allow(unsafe_code)]
    let task: &dyn Run = unsafe { &*task };
    trace::emit(|| Event::Run { task: id });
    match catch_unwind(AssertUnwindSafe(|| task.run())) {
        Ok(false) => {}
        Ok(true) => forget(core, key, id),
        Err(payload) => fail(core, key, task, id, payload),
    }
}

/// Polls `block_on`'s own future. Its panic is the caller's: it unwinds out of
/// `block_on`, leaving nothing of it queued.
#[inline(always)]
fn poll_root<F: Future>(core: &Core, root: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    core.root_scheduled.set(false);
    context::set_current(ROOT, TaskId(0), waker.data());
    // Not caught: on the way out, `RootAlive` forgets the future and `Round` requeues
    // the round's other keys.
    root.poll(&mut Context::from_waker(waker))
}

/// `block_on`'s future lives, from its start until `block_on` returns or unwinds.
struct RootAlive<'a>(&'a Core);

impl<'a> RootAlive<'a> {
    fn new(core: &'a Core) -> Self {
        core.root_alive.set(true);
        RootAlive(core)
    }
}

impl Drop for RootAlive<'_> {
    /// `block_on`'s future is done: nothing wakes it from now on (not even its own
    /// sockets' destructors, as it is dropped), and if it woke itself in its last poll,
    /// its entry leaves the queue (it would poll the next `block_on`'s future for
    /// nothing, and count in [`Stats::ready`]).
    fn drop(&mut self) {
        let core = self.0;
        core.root_alive.set(false);
        if core.root_scheduled.replace(false) {
            core.ready.borrow_mut().retain(|&key| key != ROOT);
        }
    }
}

/// Task `key` panicked while it was polled: it is over, and its handle says why.
#[cold]
fn fail(core: &Core, key: Key, task: &dyn Run, id: TaskId, payload: Box<dyn Any + Send>) {
    let message = task::panic_message(payload.as_ref()).map(str::to_owned);
    *core.panic_message.borrow_mut() = Some(message.unwrap_or_else(|| "(no message)".into()));
    // The future is dropped here, and the handle's waker woken: anyone's code, whose
    // panic is the task's too, and already reported.
    let _ = catch_unwind(AssertUnwindSafe(|| task.fail(payload)));
    core.panic_message.borrow_mut().take();
    // `task` is not used after this: it may go with the slot.
    forget(core, key, id);
}

/// Task `key` is over: out of the table. The last references may go here (the future
/// went already), and with them the task's outcome, if nobody holds its handle: a
/// destructor of its output that panics has nobody left to tell, and must not leave the
/// run loop half-way through a round or an OS poll's batch.
fn forget(core: &Core, key: Key, id: TaskId) {
    let slot = core.tasks.borrow_mut().remove(key);
    trace::emit(|| Event::Finish { task: id });
    let _ = catch_unwind(AssertUnwindSafe(|| drop(slot)));
}

/// Waits in the OS poll, runs the tasks whose sockets turned ready, and schedules what
/// the timers and other threads made ready.
fn park(core: &Core, events: &mut Events<'_>) {
    let at_once = !core.ready.borrow().is_empty();
    // Unmoved, the earliest deadline is the alarm's business already.
    let deadline = core.timers.take_moved_deadline();
    let mut woken = match core.reactor.wait(events, at_once, deadline) {
        Ok(woken) => woken,
        // epoll_wait fails only on a bad descriptor or argument: a bug, not a load.
        Err(e) => panic!("coop: the OS poll failed: {e}"),
    };
    context::forget_now();
    // A task whose socket woke it runs at once, not through the ready queue: it is the
    // hot path, and the queue would cost a push, a round and a second look-up.
    core.reactor.dispatch(
        events,
        &mut woken,
        #[inline(always)]
        |(key, dir, fd)| {
            if trace::enabled() {
                trace_wake(core, key, dir, fd);
            }
            if key == ROOT {
                core.wake(ROOT);
            } else {
                run(core, key, false);
            }
        },
    );
    if woken.timers {
        let now = context::now();
        core.timers
            .fire(now, &mut |key| core.wake(key), &mut |socket| {
                let rearm = |quarter| {
                    let deadline = now + quarter;
                    (deadline, core.timers.insert_clock(deadline, socket))
                };
                core.reactor
                    .idle_tick(socket, rearm, |(key, _, _)| core.wake(key));
            });
        // The alarm rang or could not be set: the next poll looks at the deadline again.
        core.timers.mark_moved();
    }
    if woken.inbox {
        // A job spawns its task (it runs no code of its own here).
        core.inbox.drain(|key| core.wake(key), |job| job());
        if core.inbox.stop_requested() {
            // Copied out first: a woken waker may do anything, this list included. Each
            // future takes its own entry out as it completes or is dropped.
            let waiting: Vec<Waker> = core.stop_waiters.borrow().iter().cloned().collect();
            waiting.into_iter().for_each(Waker::wake);
        }
    }
}

#[cold]
fn trace_wake(core: &Core, key: Key, dir: Direction, fd: i32) {
    let area = match dir {
        Direction::Read => Area::Read,
        Direction::Write => Area::Write,
    };
    if let Some(task) = core.task_id(key) {
        trace::emit(|| Event::Wake { task, area, fd });
    }
}

/// The keys of one round, taken from the ready queue at once. If the round stops early
/// (`block_on`'s future completes, or panics), the keys not yet run go back to the front
/// of the queue: they are `Scheduled`, and must stay queued.
struct Round<'a> {
    core: &'a Core,
    keys: &'a mut Vec<Key>,
    next: usize,
}

impl Round<'_> {
    #[inline(always)]
    fn next(&mut self) -> Option<Key> {
        let key = *self.keys.get(self.next)?;
        self.next += 1;
        Some(key)
    }

    #[cold]
    fn requeue(&mut self) {
        let mut ready = self.core.ready.borrow_mut();
        let later = std::mem::take(&mut *ready);
        ready.extend_from_slice(&self.keys[self.next..]);
        ready.extend(later);
    }
}

impl Drop for Round<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.next < self.keys.len() {
            self.requeue();
        }
        self.keys.clear();
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
/// let n = runtime.block_on(async { coop::spawn(async { 1 }).await.unwrap() + 1 });
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
                ready: RefCell::new(Vec::new()),
                root_scheduled: Cell::new(false),
                root_alive: Cell::new(false),
                tasks: RefCell::new(Slab::new()),
                reactor,
                timers: Timers::default(),
                inbox,
                closing: Cell::new(false),
                next_id: Cell::new(1),
                panic_message: RefCell::new(None),
                stop_waiters: RefCell::new(Slab::new()),
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
    /// A panic in a spawned task stays in that task (its [`JoinHandle`] reports it); a
    /// panic in `future` itself unwinds out of `block_on`, as it would from a plain
    /// function call, and the runtime stays usable.
    ///
    /// # Panics
    ///
    /// When called from inside a coop runtime (a task cannot block its own thread), and
    /// when `future` panics.
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _enter = context::enter(&self.core).unwrap_or_else(|| {
            panic!("coop: block_on called from inside a coop runtime; spawn the future instead")
        });
        let core = &*self.core;
        let mut root = pin!(future);
        // Dropped before `root`, and whichever way `block_on` ends.
        let _alive = RootAlive::new(core);
        let root_waker = waker::waker(ROOT, &core.inbox);
        core.wake(ROOT);
        let mut keys = Vec::new();
        let mut events = core.reactor.events();
        loop {
            // Most rounds after an OS poll find the queue empty: its tasks ran as their
            // sockets woke them.
            if !core.ready.borrow().is_empty() {
                std::mem::swap(&mut keys, &mut *core.ready.borrow_mut());
                let mut round = Round {
                    core,
                    keys: &mut keys,
                    next: 0,
                };
                while let Some(key) = round.next() {
                    if key != ROOT {
                        run(core, key, true);
                    } else if let Poll::Ready(output) = poll_root(core, root.as_mut(), &root_waker)
                    {
                        return output;
                    }
                }
            }
            park(core, &mut events);
        }
    }

    /// A handle for other threads, to start tasks on this runtime or ask it to stop.
    pub fn remote(&self) -> crate::Remote {
        crate::Remote::new(&self.core.inbox)
    }

    /// Counts of the runtime's state, for tests and diagnostics.
    pub fn stats(&self) -> Stats {
        stats_of(&self.core)
    }
}

/// The [`Stats`] of the runtime running on this thread, if any (for a task that reports
/// on its own runtime, e.g. a metrics endpoint).
pub fn stats() -> Option<Stats> {
    context::with_core(|core| stats_of(core))
}

fn stats_of(core: &Core) -> Stats {
    let (parked_read, parked_write, waiters) = core.reactor.parked();
    let tasks = core.tasks.borrow();
    // The queue may hold keys of tasks that ended in the poll that woke them: stale, they
    // will find nothing, and are not counted.
    let ready = core
        .ready
        .borrow()
        .iter()
        .filter(|&&key| key == ROOT || tasks.get(key).is_some())
        .count();
    Stats {
        tasks: tasks.len(),
        ready,
        parked_read,
        parked_write,
        waiters,
        sockets: core.reactor.len(),
        timers: core.timers.len(),
    }
}

/// A snapshot of a [`Runtime`]'s state, from [`Runtime::stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Live tasks (not counting `block_on`'s own future).
    pub tasks: usize,
    /// Tasks scheduled for the next round.
    pub ready: usize,
    /// Sockets with a task waiting to read (the seed's `recv_wait`).
    pub parked_read: usize,
    /// Sockets with a task waiting to write (the seed's `send_wait`).
    pub parked_write: usize,
    /// Waiters in every socket's waiting areas (a socket may have several).
    pub waiters: usize,
    /// Sockets registered with the reactor.
    pub sockets: usize,
    /// Pending timers.
    pub timers: usize,
}

impl Drop for Runtime {
    /// Drops every task's future unfinished (their `JoinHandle`s report them cancelled),
    /// and with them the sockets and timers they hold; then the inbox and the OS poll
    /// go. Destructors that spawn or wake meanwhile are harmless: a task spawned now is
    /// cancelled at once.
    fn drop(&mut self) {
        let core = &self.core;
        core.closing.set(true);
        let _enter = context::enter_for_drop(core);
        // Taken out first, dropped after: no borrow is held while destructors run.
        let tasks: Vec<Slot> = core.tasks.borrow_mut().drain().collect();
        for slot in &tasks {
            slot.task.cancel_now();
        }
        drop(tasks);
        core.ready.borrow_mut().clear();
        core.root_scheduled.set(false);
        // Jobs from other threads go unrun: their tasks would be cancelled at once. From
        // now on the inbox refuses them, though a socket or a `Sleep` kept past the
        // runtime keeps it (and the rest of the core) alive.
        core.inbox.close();
        let waiting: Vec<Waker> = core.stop_waiters.borrow_mut().drain().collect();
        drop(waiting);
        drop(core.timers.clear());
        core.reactor.clear_waiters();
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runtime")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Runs `future` on a new [`Runtime`] and returns its output: the seed's `run()`.
///
/// The runtime is dropped on return, and with it any task still unfinished; see
/// [`Runtime::block_on`].
///
/// # Panics
///
/// When the OS refuses a poll instance (use [`Runtime::new`] to handle that), when
/// called from inside a coop runtime, and when `future` panics.
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

/// Lets every other ready task run once before the caller continues.
///
/// # Examples
///
/// ```
/// coop::block_on(async {
///     for _ in 0..3 {
///         // ... a slice of long computation ...
///         coop::yield_now().await;
///     }
/// });
/// ```
pub async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
}
