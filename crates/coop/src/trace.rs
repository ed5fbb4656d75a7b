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

use std::cell::RefCell;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use crate::context;
pub use crate::task::TaskId;
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

type Hook = Rc<dyn Fn(&Event<'_>)>;

thread_local! {
    /// The hook, and whether it is running (its own events are not reported to it).
    static HOOK: RefCell<(Option<Hook>, bool)> = const { RefCell::new((None, false)) };
}

/// Calls `hook` with every scheduler event on this thread, from now on.
///
/// The hook may do anything a task may (spawn, wake, set or clear the hook); events
/// that happen while the hook runs are not reported to it. A hook that panics is
/// removed: the panic goes no further than the hook (the panic hook prints it as usual),
/// and the scheduler goes on untraced.
pub fn set_hook(hook: impl Fn(&Event<'_>) + 'static) {
    let hook: Hook = Rc::new(hook);
    let old = HOOK.with_borrow_mut(|(slot, _)| slot.replace(hook));
    drop(old);
    context::set_tracing(true);
}

/// Stops calling the hook (one that is running finishes its call).
pub fn clear_hook() {
    context::set_tracing(false);
    let old = HOOK
        .try_with(|hook| hook.borrow_mut().0.take())
        .ok()
        .flatten();
    drop(old);
}

/// Whether a hook is installed: worth building a task's name for.
#[inline]
pub fn enabled() -> bool {
    context::tracing()
}

/// Reports the event `make` builds, if a hook is installed.
#[inline]
pub(crate) fn emit<'a>(make: impl FnOnce() -> Event<'a>) {
    if context::tracing() {
        emit_slow(&make());
    }
}

#[cold]
fn emit_slow(event: &Event<'_>) {
    // Taken out (a reference count) and called with no borrow held: the hook may set
    // or clear the hook, or cause events of its own, which are dropped.
    let hook = HOOK
        .try_with(|hook| {
            let mut hook = hook.borrow_mut();
            match &*hook {
                (Some(f), false) => {
                    let f = Rc::clone(f);
                    hook.1 = true;
                    Some(f)
                }
                _ => None,
            }
        })
        .ok()
        .flatten();
    let Some(hook) = hook else { return };
    struct Running;
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = HOOK.try_with(|hook| hook.borrow_mut().1 = false);
        }
    }
    let _running = Running;
    // The hook is anyone's code, called from inside the scheduler (between a task's
    // spawn and its scheduling, in the OS poll step): a panic in it must not leave the
    // scheduler half-way. It is caught, and the hook removed (the panic hook has printed
    // the message); the scheduler goes on untraced.
    if catch_unwind(AssertUnwindSafe(|| hook(event))).is_err() {
        clear_hook();
    }
}
