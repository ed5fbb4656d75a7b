//! The per-thread state, all of it: which runtime runs on this thread (its [`Core`]:
//! ready queue, task table, reactor, timers, inbox), which task it is polling, that
//! poll's fairness budget, the time as of the last OS poll, and whether anyone traces.
//!
//! # A task's life, as the runtime sees it
//!
//! Each live task has a slot in the task table, with a scheduling state:
//!
//! ```text
//!             spawn                  wake                       (wake: no change)
//!               │            ┌────────────────────┐                  ┌──┐
//!               ▼            │                    ▼                  │  ▼
//!   Idle ◄──Pending── Running ◄──taken from the queue── Scheduled ───┘
//!    │                 │   │
//!    │ wake            │   └──wake──► RunningWoken ──Pending──► Scheduled (queued again)
//!    └──► Scheduled    │                  │
//!                      └──Ready, panic,───┴──► gone from the table: its key goes stale,
//!                         cancelled            and every later wake finds nothing
//! ```
//!
//! A task is in the ready queue exactly when it is `Scheduled`. A wake during its own
//! poll (a yield, a spent budget, a combinator) marks it `RunningWoken`, and it is
//! queued again only if that poll returns `Pending`: a task that completes in the poll
//! that woke it is never polled again. (`task.rs` draws the other half: what happens
//! to the future and its output.)

use std::cell::{Cell, RefCell};
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::Instant;

use crate::inbox::{Header, Inbox};
use crate::reactor::Reactor;
use crate::slab::{Key, Slab};
use crate::task::{Run, TaskId};
use crate::timers::Timers;
use crate::waiter::Who;

/// The key `block_on`'s own future wakes by. Never a task's: slab indices stay below
/// `u32::MAX`.
pub(crate) const ROOT: Key = Key::from_token(usize::MAX);

/// Operations that found their socket ready (or their timer due), per poll of a task.
///
/// Large enough that a busy connection moves ~2 MiB (128 reads of 16 KiB) per turn; small
/// enough that 10,000 ready tasks each wait for at most one turn of every other.
pub(crate) const BUDGET: u32 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    Idle,
    Scheduled,
    Running,
    RunningWoken,
}

/// A live task's entry in the task table.
pub(crate) struct Slot {
    pub(crate) state: Cell<State>,
    pub(crate) id: TaskId,
    pub(crate) task: Rc<dyn Run>,
}

/// Everything one runtime owns.
pub(crate) struct Core {
    /// Keys of the `Scheduled` tasks (and [`ROOT`]), in the order they were woken.
    pub(crate) ready: RefCell<Vec<Key>>,
    /// `block_on`'s future is in the ready queue.
    pub(crate) root_scheduled: Cell<bool>,
    pub(crate) tasks: RefCell<Slab<Slot>>,
    pub(crate) reactor: Reactor,
    pub(crate) timers: Timers,
    pub(crate) inbox: Arc<Inbox>,
    /// The runtime is being dropped: a task spawned now is cancelled at once.
    pub(crate) closing: Cell<bool>,
    /// The number the next task gets in traces.
    pub(crate) next_id: Cell<u64>,
}

impl Core {
    /// Schedules the task `key` unless it is scheduled already or gone. Returns its
    /// number if it is a live task (for traces).
    #[inline]
    pub(crate) fn wake(&self, key: Key) -> Option<TaskId> {
        if key == ROOT {
            if !self.root_scheduled.replace(true) {
                self.ready.borrow_mut().push(ROOT);
            }
            return None;
        }
        let tasks = self.tasks.borrow();
        let slot = tasks.get(key)?;
        match slot.state.get() {
            State::Idle => {
                slot.state.set(State::Scheduled);
                self.ready.borrow_mut().push(key);
            }
            State::Running => slot.state.set(State::RunningWoken),
            State::Scheduled | State::RunningWoken => {}
        }
        Some(slot.id)
    }
}

/// The task being polled.
#[derive(Clone, Copy)]
struct Current {
    key: Key,
    id: TaskId,
    /// Its waker's data pointer, compared (never followed) to tell its own waker from a
    /// combinator's.
    waker: *const (),
}

struct Context {
    /// The runtime running on this thread.
    core: RefCell<Option<Rc<Core>>>,
    /// The same, as an address: compared, never followed.
    running: Cell<*const Core>,
    current: Cell<Option<Current>>,
    budget: Cell<u32>,
    /// The time as of the last return from the OS poll, once someone asked.
    now: Cell<Option<Instant>>,
    tracing: Cell<bool>,
}

thread_local! {
    static CONTEXT: Context = const {
        Context {
            core: RefCell::new(None),
            running: Cell::new(ptr::null()),
            current: Cell::new(None),
            budget: Cell::new(BUDGET),
            now: Cell::new(None),
            tracing: Cell::new(false),
        }
    };
}

/// Makes `core` the running runtime of this thread until dropped, restoring whatever
/// ran before (a runtime dropped inside another's task).
pub(crate) struct Enter {
    previous: Option<Rc<Core>>,
    previous_current: Option<Current>,
}

/// Makes `core` current; `None` if another runtime is already running here.
pub(crate) fn enter(core: &Rc<Core>) -> Option<Enter> {
    CONTEXT.with(|cx| {
        if cx.core.borrow().is_some() {
            return None;
        }
        Some(enter_over(cx, core))
    })
}

/// Makes `core` current even inside another runtime (to drop it, not to run it).
pub(crate) fn enter_for_drop(core: &Rc<Core>) -> Option<Enter> {
    CONTEXT.try_with(|cx| enter_over(cx, core)).ok()
}

fn enter_over(cx: &Context, core: &Rc<Core>) -> Enter {
    let previous = cx.core.replace(Some(Rc::clone(core)));
    cx.running.set(Rc::as_ptr(core));
    Enter {
        previous,
        previous_current: cx.current.take(),
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let previous_current = self.previous_current;
        let _ = CONTEXT.try_with(|cx| {
            cx.running
                .set(previous.as_ref().map_or(ptr::null(), Rc::as_ptr));
            cx.current.set(previous_current);
            let ours = cx.core.replace(previous);
            drop(ours);
        });
    }
}

/// Calls `f` with the running runtime, if any.
pub(crate) fn with_core<R>(f: impl FnOnce(&Rc<Core>) -> R) -> Option<R> {
    // Cloned out, so that no borrow is held while `f` runs (it may run a trace hook,
    // which may do anything, even drop a runtime).
    let core = CONTEXT.try_with(|cx| cx.core.borrow().clone()).ok()??;
    Some(f(&core))
}

/// Wakes the task of `header` here if its runtime runs on this thread; `false` if it
/// does not (the caller goes through the inbox).
pub(crate) fn wake_local(header: &Header) -> bool {
    CONTEXT
        .try_with(|cx| {
            let core = cx.core.borrow();
            match &*core {
                Some(core) if ptr::eq(Arc::as_ptr(&core.inbox), header.inbox.as_ptr()) => {
                    core.wake(header.key);
                    true
                }
                _ => false,
            }
        })
        .unwrap_or(false)
}

/// Marks the start of a poll of task `key` (whose waker is `waker`), with a full
/// budget; `None` marks its end.
#[inline]
pub(crate) fn set_current(task: Option<(Key, TaskId, &Waker)>) {
    CONTEXT.with(|cx| {
        cx.current.set(task.map(|(key, id, waker)| Current {
            key,
            id,
            waker: waker.data(),
        }));
        cx.budget.set(BUDGET);
    });
}

/// The number of the task being polled, for traces.
pub(crate) fn current_id() -> Option<TaskId> {
    CONTEXT
        .try_with(|cx| cx.current.get().map(|c| c.id))
        .ok()
        .flatten()
}

/// Who is waiting, for a waiting area of `core`: the task being polled, by key, if `cx`
/// carries its own waker and it is `core`'s; else the waker.
#[inline]
pub(crate) fn who<'a>(cx: &TaskContext<'a>, core: &Core) -> Who<'a> {
    let waker = cx.waker();
    let own = CONTEXT.with(|cx| match cx.current.get() {
        Some(current) if current.waker == waker.data() && ptr::eq(cx.running.get(), core) => {
            Some(current.key)
        }
        _ => None,
    });
    match own {
        Some(key) => Who::Task(key),
        None => Who::Waker(waker),
    }
}

/// Spends one unit of the task's budget, or, when it is spent, wakes the task and
/// returns `Pending`: the task goes to the back of the ready queue as if it had yielded.
#[inline]
pub(crate) fn poll_spend(cx: &mut TaskContext<'_>) -> Poll<()> {
    let left = CONTEXT.with(|c| {
        let left = c.budget.get();
        c.budget.set(left.saturating_sub(1));
        left
    });
    if left == 0 {
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    Poll::Ready(())
}

/// The time as of the last OS poll, inside a runtime; the clock, outside.
pub(crate) fn now() -> Instant {
    CONTEXT
        .try_with(|cx| {
            if cx.running.get().is_null() {
                return Instant::now();
            }
            cx.now.get().unwrap_or_else(|| {
                let now = Instant::now();
                cx.now.set(Some(now));
                now
            })
        })
        .unwrap_or_else(|_| Instant::now())
}

/// Called by the run loop after each OS poll: the next [`now`] reads the clock afresh.
#[inline]
pub(crate) fn forget_now() {
    CONTEXT.with(|cx| cx.now.set(None));
}

#[inline]
pub(crate) fn tracing() -> bool {
    CONTEXT.try_with(|cx| cx.tracing.get()).unwrap_or(false)
}

pub(crate) fn set_tracing(on: bool) {
    let _ = CONTEXT.try_with(|cx| cx.tracing.set(on));
}
