//! The per-thread state, all of it: which runtime runs on this thread (its [`Core`]:
//! ready queue, task table, reactor, timers, inbox), which task it is polling, that
//! poll's fairness budget, the time as of the last OS poll, and whether anyone traces.
//!
//! # A task's life, as the runtime sees it
//!
//! Each live task has a slot in the task table, found by a key that names the slot *and*
//! its occupant (a generation): once the task is gone, its key finds nothing. The slot
//! says whether the task is in the ready queue:
//!
//! ```text
//!            spawn, or a wake             taken from the queue
//!   Idle ─────────────────────► Scheduled ────────────────────► Idle, and polled
//!    │ ▲                                                          ▲ │
//!    │ └──────────────────────── Pending ─────────────────────────┼─┤
//!    └──────────── woken by its socket: polled there and then ────┘ │
//!                                                                   │ Ready, panic,
//!                  gone from the table: its key goes stale, and ◄───┘ cancelled
//!                  every later wake, and any key still queued, finds nothing
//! ```
//!
//! A task is in the ready queue exactly when it is `Scheduled`, so a wake of a scheduled
//! task changes nothing. The slot is `Idle` while its task is polled, so a wake during
//! that poll (a yield, a spent budget, a combinator) queues it for the next round at
//! once; if that same poll completes the task, the queued key has gone stale and the
//! task is never polled again. After a poll that returns `Pending`, the runtime has
//! nothing to update. A socket's event polls an `Idle` task at once, from the OS poll's
//! batch; a `Scheduled` one it leaves in the queue, where its turn comes. (`task.rs`
//! draws the other half: what happens to the future and its output.)

use std::cell::{Cell, RefCell};
use std::ptr;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use crate::inbox::{Header, Inbox};
use crate::reactor::Reactor;
use crate::slab::{Key, Slab};
use crate::task::{Run, TaskId};
use crate::timers::Timers;
use crate::waiter::Who;

/// The key `block_on`'s own future wakes by. Never a task's: slab indices stay at most
/// `slab::LAST_INDEX`.
pub(crate) const ROOT: Key = Key::from_token(usize::MAX);

/// Operations that found their socket ready (or their timer due), per poll of a task.
///
/// Large enough that a busy connection moves ~2 MiB (127 reads of 16 KiB) per turn; small
/// enough that 10,000 ready tasks each wait for at most one turn of every other. Not a
/// multiple of [`CHECK_EVERY`]: a poll's first operation then stays on the fast path.
pub(crate) const BUDGET: u32 = 127;

/// A poll also ends once it has run this long (checked every [`CHECK_EVERY`] operations):
/// an operation that costs far more than a plain read (a TLS record decrypted and its
/// reply encrypted) must not stretch a turn to 127 of them.
pub(crate) const SLICE: Duration = Duration::from_micros(200);

/// Operations between looks at the clock (a power of two). A poll with fewer (an echo's
/// two) never reads it; the first look marks the slice's start, so it is measured from
/// the 8th operation.
pub(crate) const CHECK_EVERY: u32 = 8;

/// A live task's entry in the task table.
pub(crate) struct Slot {
    /// In the ready queue.
    pub(crate) scheduled: Cell<bool>,
    pub(crate) id: TaskId,
    pub(crate) task: Rc<dyn Run>,
    /// Its waker's data pointer, kept at hand for [`set_current`] (compared, never
    /// followed).
    pub(crate) waker: *const (),
}

/// Everything one runtime owns.
pub(crate) struct Core {
    /// Keys of the `Scheduled` tasks (and [`ROOT`]), in the order they were woken.
    pub(crate) ready: RefCell<Vec<Key>>,
    /// `block_on`'s future is in the ready queue.
    pub(crate) root_scheduled: Cell<bool>,
    /// `block_on` runs, and its future has not ended: only then can the future be
    /// woken. (A socket it waited on may be dropped later, and wake it as it goes.)
    pub(crate) root_alive: Cell<bool>,
    pub(crate) tasks: RefCell<Slab<Slot>>,
    pub(crate) reactor: Reactor,
    pub(crate) timers: Timers,
    pub(crate) inbox: Arc<Inbox>,
    /// The runtime is being dropped: a task spawned now is cancelled at once.
    pub(crate) closing: Cell<bool>,
    /// The number the next task gets in traces.
    pub(crate) next_id: Cell<u64>,
    /// While the future of a task that panicked is dropped: the panic's message, for
    /// the destructors that want to say why (`Server`'s connection count).
    pub(crate) panic_message: RefCell<Option<String>>,
    /// The wakers of [`stop_requested`](crate::stop_requested) futures, each taken out
    /// when its future is dropped.
    pub(crate) stop_waiters: RefCell<Slab<std::task::Waker>>,
}

impl Core {
    /// Schedules the task `key` unless it is scheduled already or gone.
    #[inline(always)]
    pub(crate) fn wake(&self, key: Key) {
        if key == ROOT {
            if self.root_alive.get() && !self.root_scheduled.replace(true) {
                self.ready.borrow_mut().push(ROOT);
            }
            return;
        }
        let tasks = self.tasks.borrow();
        let Some(slot) = tasks.get(key) else { return };
        if !slot.scheduled.replace(true) {
            self.ready.borrow_mut().push(key);
        }
    }

    /// The number of live task `key`, for traces.
    pub(crate) fn task_id(&self, key: Key) -> Option<TaskId> {
        self.tasks.borrow().get(key).map(|slot| slot.id)
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

/// The state read on every poll: plain cells, no destructor, so that reaching it is one
/// address computation.
struct Hot {
    /// The runtime running on this thread, as an address: compared, never followed.
    running: Cell<*const Core>,
    current: Cell<Option<Current>>,
    budget: Cell<u32>,
    /// When the poll's slice was first measured (at its `CHECK_EVERY`th operation).
    slice_start: Cell<Option<Instant>>,
    /// The time as of the last return from the OS poll, once someone asked.
    now: Cell<Option<Instant>>,
    tracing: Cell<bool>,
}

thread_local! {
    static HOT: Hot = const {
        Hot {
            running: Cell::new(ptr::null()),
            current: Cell::new(None),
            budget: Cell::new(BUDGET),
            slice_start: Cell::new(None),
            now: Cell::new(None),
            tracing: Cell::new(false),
        }
    };
    /// The runtime running on this thread, for what needs more than its address
    /// (spawning, registering a socket or a timer, a wake through a `Waker`).
    static CORE: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
}

/// Makes `core` the running runtime of this thread until dropped, restoring whatever
/// ran before (a runtime dropped inside another's task).
pub(crate) struct Enter {
    previous: Option<Rc<Core>>,
    previous_current: Option<Current>,
}

/// Makes `core` current; `None` if another runtime is already running here.
pub(crate) fn enter(core: &Rc<Core>) -> Option<Enter> {
    if CORE.with_borrow(Option::is_some) {
        return None;
    }
    enter_for_drop(core)
}

/// Makes `core` current even inside another runtime (to drop it, not to run it).
pub(crate) fn enter_for_drop(core: &Rc<Core>) -> Option<Enter> {
    let previous = CORE
        .try_with(|current| current.replace(Some(Rc::clone(core))))
        .ok()?;
    let previous_current = HOT.with(|hot| {
        hot.running.set(Rc::as_ptr(core));
        hot.current.take()
    });
    Some(Enter {
        previous,
        previous_current,
    })
}

impl Drop for Enter {
    fn drop(&mut self) {
        let previous = self.previous.take();
        let _ = HOT.try_with(|hot| {
            hot.running
                .set(previous.as_ref().map_or(ptr::null(), Rc::as_ptr));
            hot.current.set(self.previous_current);
            hot.now.set(None);
        });
        let ours = CORE.try_with(|current| current.replace(previous));
        drop(ours);
    }
}

/// Calls `f` with the running runtime, if any.
pub(crate) fn with_core<R>(f: impl FnOnce(&Rc<Core>) -> R) -> Option<R> {
    // Cloned out, so that no borrow is held while `f` runs (it may run a trace hook,
    // which may do anything, even drop a runtime).
    let core = CORE.try_with(|current| current.borrow().clone()).ok()??;
    Some(f(&core))
}

/// Inside the destructor of a future that panicked: the panic's message.
pub(crate) fn task_panic() -> Option<String> {
    with_core(|core| core.panic_message.borrow().clone()).flatten()
}

/// Wakes the task of `header` here if its runtime runs on this thread; `false` if it
/// does not (the caller goes through the inbox).
pub(crate) fn wake_local(header: &Header) -> bool {
    CORE.try_with(|current| {
        let core = current.borrow();
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

/// Marks the start of a poll of task `key` (whose waker's data pointer is `waker`), with
/// a full budget. (Nothing marks its end: who the current task is matters only inside a
/// poll.)
#[inline]
pub(crate) fn set_current(key: Key, id: TaskId, waker: *const ()) {
    HOT.with(|hot| {
        hot.current.set(Some(Current { key, id, waker }));
        hot.budget.set(BUDGET);
        hot.slice_start.set(None);
    });
}

/// The number of the task being polled, for traces.
pub(crate) fn current_id() -> Option<TaskId> {
    HOT.with(|hot| hot.current.get().map(|c| c.id))
}

/// Who is waiting, for a waiting area of `core`: the task being polled, by key, if `cx`
/// carries its own waker and it is `core`'s; else the waker.
#[inline(always)]
pub(crate) fn who<'a>(cx: &TaskContext<'a>, core: &Core) -> Who<'a> {
    let waker = cx.waker();
    let own = HOT.with(|hot| match hot.current.get() {
        Some(current) if current.waker == waker.data() && ptr::eq(hot.running.get(), core) => {
            Some(current.key)
        }
        _ => None,
    });
    match own {
        Some(key) => Who::Task(key),
        None => Who::Waker(waker),
    }
}

/// Spends one unit of the task's budget, or, when it is spent (or the poll has run its
/// [`SLICE`]), wakes the task and returns `Pending`: the task goes to the back of the
/// ready queue as if it had yielded.
#[inline(always)]
pub(crate) fn poll_spend(cx: &mut TaskContext<'_>) -> Poll<()> {
    let left = HOT.with(|hot| {
        let left = hot.budget.get();
        hot.budget.set(left.saturating_sub(1));
        // One test on the fast path: the spent budget (0) comes this way too.
        if left & (CHECK_EVERY - 1) == 0 {
            return slice_left(hot, left);
        }
        left
    });
    if left == 0 {
        cx.waker().wake_by_ref();
        return Poll::Pending;
    }
    Poll::Ready(())
}

/// The budget left after a look at the clock: none once the slice has run out.
#[cold]
fn slice_left(hot: &Hot, left: u32) -> u32 {
    if left == 0 {
        return 0;
    }
    let now = Instant::now();
    match hot.slice_start.get() {
        None => {
            hot.slice_start.set(Some(now));
            left
        }
        Some(start) if now - start >= SLICE => {
            hot.budget.set(0);
            0
        }
        Some(_) => left,
    }
}

/// The time as of the last OS poll, inside a runtime; the clock, outside.
pub(crate) fn now() -> Instant {
    HOT.with(|hot| {
        if hot.running.get().is_null() {
            return Instant::now();
        }
        hot.now.get().unwrap_or_else(|| {
            let now = Instant::now();
            hot.now.set(Some(now));
            now
        })
    })
}

/// Called by the run loop after each OS poll: the next [`now`] reads the clock afresh.
#[inline]
pub(crate) fn forget_now() {
    HOT.with(|hot| hot.now.set(None));
}

#[inline]
pub(crate) fn tracing() -> bool {
    HOT.with(|hot| hot.tracing.get())
}

pub(crate) fn set_tracing(on: bool) {
    HOT.with(|hot| hot.tracing.set(on));
}
