//! Watching the scheduler work: one event per step of a task's life.
//!
//! The seed's "How it works" says it in four steps: a task yields when it would block,
//! the scheduler moves it to a waiting area, other tasks run, and the task resumes when
//! its I/O is ready. With a hook installed, coop reports exactly those steps as they
//! happen:
//!
//! ```text
//! spawn   a task is created (with a name, if it was given one)
//! run     the scheduler polls it
//! park    it would block: it waits in a socket's read or write waiting area
//! wake    the OS poll found that socket ready: the task is back in the ready queue
//! finish  it returned
//! ```
//!
//! Without a hook each of these costs one thread-local flag check.
//!
//! # Examples
//!
//! ```
//! use std::cell::RefCell;
//! use std::rc::Rc;
//!
//! let seen = Rc::new(RefCell::new(Vec::new()));
//! let log = Rc::clone(&seen);
//! coop::trace::set_hook(move |event| log.borrow_mut().push(event.to_string()));
//! coop::block_on(async {
//!     coop::spawn_named("worker", async {}).await;
//! });
//! coop::trace::clear_hook();
//! assert_eq!(seen.borrow()[0], "spawn task 1 worker");
//! ```

use std::cell::{Cell, RefCell};
use std::fmt;

/// A task, as traces name it: numbered from 1 in the order of spawning, per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskId(pub u64);

/// Which waiting area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Waiting to read: the seed's `recv_wait`.
    Read,
    /// Waiting to write: the seed's `send_wait`.
    Write,
}

/// One step of a task's life.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A task was created.
    Spawn {
        /// The new task.
        task: TaskId,
        /// What it is, if its spawner said (e.g. `conn 127.0.0.1:50412`).
        name: Option<&'a str>,
    },
    /// The scheduler is about to poll a task.
    Run {
        /// The task.
        task: TaskId,
    },
    /// A task waits in a socket's waiting area.
    Park {
        /// The task.
        task: TaskId,
        /// Read or write.
        area: Area,
        /// The socket's file descriptor.
        fd: i32,
    },
    /// The OS poll found a socket ready and put the task waiting there back in the ready
    /// queue.
    Wake {
        /// The task.
        task: TaskId,
        /// Read or write.
        area: Area,
        /// The socket's file descriptor.
        fd: i32,
    },
    /// A task returned.
    Finish {
        /// The task.
        task: TaskId,
    },
}

impl fmt::Display for Event<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let area = |area: &Area| match area {
            Area::Read => "read",
            Area::Write => "write",
        };
        match self {
            Event::Spawn { task, name } => {
                write!(f, "spawn task {}", task.0)?;
                match name {
                    Some(name) => write!(f, " {name}"),
                    None => Ok(()),
                }
            }
            Event::Run { task } => write!(f, "run task {}", task.0),
            Event::Park { task, area: a, fd } => {
                write!(f, "park task {} {} fd {fd}", task.0, area(a))
            }
            Event::Wake { task, area: a, fd } => {
                write!(f, "wake task {} {} fd {fd}", task.0, area(a))
            }
            Event::Finish { task } => write!(f, "finish task {}", task.0),
        }
    }
}

type Hook = Box<dyn Fn(&Event<'_>)>;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

/// Calls `hook` with every scheduler event on this thread, from now on.
pub fn set_hook(hook: impl Fn(&Event<'_>) + 'static) {
    HOOK.set(Some(Box::new(hook)));
    ON.set(true);
}

/// Stops calling the hook.
pub fn clear_hook() {
    ON.set(false);
    HOOK.set(None);
}

/// Whether a hook is installed: worth building a task's name for.
#[inline]
pub fn enabled() -> bool {
    ON.get()
}

/// Reports the event `make` builds, if a hook is installed.
#[inline]
pub(crate) fn emit<'a>(make: impl FnOnce() -> Event<'a>) {
    if ON.get() {
        emit_slow(&make());
    }
}

#[cold]
fn emit_slow(event: &Event<'_>) {
    // A hook that traces from inside itself would borrow twice: its events are dropped.
    HOOK.with(|hook| {
        if let Ok(hook) = hook.try_borrow() {
            if let Some(hook) = hook.as_ref() {
                hook(event);
            }
        }
    });
}
