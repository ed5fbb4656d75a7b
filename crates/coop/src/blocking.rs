//! [`spawn_blocking`]: blocking work (a host name's lookup, a file, a library that
//! blocks) on a few helper threads, so that the runtime's thread never stops for it.
//!
//! One pool for the process, shared by every runtime: at most [`MAX_BLOCKING_THREADS`]
//! threads, started when work comes and none is idle, each ending after ten seconds
//! with nothing to do. Work beyond that waits in a queue, in the
//! order it came. The result goes back through a [`oneshot`] channel to a coop task
//! whose `JoinHandle` the caller holds.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::oneshot;
use crate::task::{JoinError, JoinHandle};

/// The most threads the blocking pool runs at once, for the whole process.
///
/// Beyond them, work waits for one to be free, first come first served. Blocking work
/// that never ends (a loop reading a pipe forever) takes a thread for good: give such
/// work a thread of its own (`std::thread::spawn`).
pub const MAX_BLOCKING_THREADS: usize = 16;

/// How long a pool thread waits for work before it ends.
const IDLE_TIME: Duration = Duration::from_secs(10);

type Job = Box<dyn FnOnce() + Send>;

struct Pool {
    state: Mutex<State>,
    work: Condvar,
}

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

static POOL: Pool = Pool {
    state: Mutex::new(State {
        queue: VecDeque::new(),
        threads: 0,
        idle: 0,
    }),
    work: Condvar::new(),
};

/// Runs `f` on the blocking pool and returns a handle to its result; the caller's task
/// awaits it without stopping its runtime.
///
/// * **The pool** has at most [`MAX_BLOCKING_THREADS`] threads for the whole process.
///   When all are busy, `f` waits in a queue (first come, first served) until one is
///   free; it is never refused and never run on the runtime's thread.
/// * **A panic** in `f` is the handle's [`JoinError::Panicked`], with its message; the
///   pool thread goes on.
/// * **Dropping the handle** detaches the work; [`JoinHandle::abort`] stops the wait for
///   it, but `f` runs to its end on its thread all the same (a thread cannot be stopped
///   from outside), and its result is dropped there.
///
/// # Panics
///
/// When called outside a coop runtime (the handle is a task of the runtime that awaits
/// it).
///
/// # Examples
///
/// ```
/// coop::block_on(async {
///     let sum = coop::spawn_blocking(|| (1..=100u64).sum::<u64>()).await.unwrap();
///     assert_eq!(sum, 5050);
///     let failed = coop::spawn_blocking(|| panic!("disk on fire")).await;
///     assert_eq!(failed.unwrap_err().panic_message(), Some("disk on fire"));
/// });
/// ```
pub fn spawn_blocking<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (sender, receiver) = oneshot::channel();
    let job: Job = Box::new(move || {
        sender.send(catch_unwind(AssertUnwindSafe(f)).map_err(JoinError::Panicked));
    });
    let handle = crate::spawn(async move {
        match receiver.await {
            Ok(output) => output,
            // The panic is the task's own: its handle reports it, with its message.
            Err(JoinError::Panicked(payload)) => resume_unwind(payload),
            Err(JoinError::Cancelled) => {
                resume_unwind(Box::new("coop::spawn_blocking: the OS refused a thread"))
            }
        }
    });
    POOL.submit(job);
    handle
}

impl Pool {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Jobs run with no lock held, and catch their panics: a poisoned state is whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn submit(&'static self, job: Job) {
        let mut state = self.lock();
        state.queue.push_back(job);
        // An idle thread takes one job when it wakes: a thread is needed for every job
        // queued beyond them.
        if state.queue.len() <= state.idle {
            drop(state);
            self.work.notify_one();
            return;
        }
        if state.threads >= MAX_BLOCKING_THREADS {
            return; // waits its turn
        }
        state.threads += 1;
        drop(state);
        let started = std::thread::Builder::new()
            .name("coop-blocking".into())
            .spawn(|| POOL.serve());
        if started.is_err() {
            let mut state = self.lock();
            state.threads -= 1;
            if state.threads == 0 {
                // Nobody would ever take it: dropped, its handle says why.
                let refused = std::mem::take(&mut state.queue);
                drop(state);
                drop(refused);
            }
        }
    }

    /// A pool thread: takes work in order until there has been none for `IDLE_TIME`.
    fn serve(&self) {
        let mut state = self.lock();
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                job();
                state = self.lock();
                continue;
            }
            state.idle += 1;
            let (next, waited) = self
                .work
                .wait_timeout_while(state, IDLE_TIME, |state| state.queue.is_empty())
                .unwrap_or_else(PoisonError::into_inner);
            state = next;
            state.idle -= 1;
            if waited.timed_out() && state.queue.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}
