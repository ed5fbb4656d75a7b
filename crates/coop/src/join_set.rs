//! [`JoinSet`]: many tasks, awaited as they finish, aborted together.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use crate::task::{JoinError, JoinHandle};

/// A set of tasks of one runtime, awaited in the order they finish.
///
/// * [`spawn`](Self::spawn) starts a task in the set; [`join_next`](Self::join_next)
///   gives the outcome of the next one to end (its output, or why there is none: it
///   panicked, or was aborted), and `None` once the set is empty.
/// * **Dropping the set aborts every task still in it**, as
///   [`abort_all`](Self::abort_all) does: their futures are dropped the next time the
///   runtime runs. (A lone [`JoinHandle`] detaches its task when dropped; a set is for
///   work that belongs to its owner.)
/// * Each task's end is noted as it happens, so `join_next` costs the same however many
///   tasks the set holds.
///
/// `join_next` is cancel safe: dropped before it completes, it took no outcome.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use coop::JoinSet;
///
/// coop::block_on(async {
///     let mut set = JoinSet::new();
///     for ms in [30, 10, 20] {
///         set.spawn(async move {
///             coop::time::sleep(Duration::from_millis(ms)).await;
///             ms
///         });
///     }
///     let mut order = Vec::new();
///     while let Some(outcome) = set.join_next().await {
///         order.push(outcome.unwrap());
///     }
///     assert_eq!(order, [10, 20, 30]);
/// });
/// ```
pub struct JoinSet<T> {
    tasks: HashMap<u64, JoinHandle<T>>,
    next_id: u64,
    ended: Rc<Ended>,
}

/// The tasks that have ended and not been joined, shared with each task's [`Notify`].
#[derive(Default)]
struct Ended {
    ids: RefCell<VecDeque<u64>>,
    waker: Cell<Option<Waker>>,
}

/// Notes its task's end in the set as the task's future is dropped (it completed,
/// panicked, or was cancelled: the future is dropped in each case).
struct Notify {
    id: u64,
    ended: Rc<Ended>,
}

impl Drop for Notify {
    fn drop(&mut self) {
        self.ended.ids.borrow_mut().push_back(self.id);
        if let Some(waker) = self.ended.waker.take() {
            waker.wake();
        }
    }
}

impl<T: 'static> JoinSet<T> {
    /// An empty set.
    pub fn new() -> JoinSet<T> {
        JoinSet {
            tasks: HashMap::new(),
            next_id: 0,
            ended: Rc::default(),
        }
    }

    /// Starts `future` as a task of the current runtime, in this set.
    ///
    /// # Panics
    ///
    /// When called outside a coop runtime.
    pub fn spawn<F>(&mut self, future: F)
    where
        F: Future<Output = T> + 'static,
    {
        let id = self.next_id;
        self.next_id += 1;
        let notify = Notify {
            id,
            ended: Rc::clone(&self.ended),
        };
        let handle = crate::spawn(async move {
            let _notify = notify;
            future.await
        });
        self.tasks.insert(id, handle);
    }

    /// Waits for the next task to end and gives its outcome; `None` if the set is empty.
    pub async fn join_next(&mut self) -> Option<Result<T, JoinError>> {
        std::future::poll_fn(|cx| self.poll_join_next(cx)).await
    }

    /// The poll behind [`join_next`](Self::join_next), for hand-written futures.
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        loop {
            if self.tasks.is_empty() {
                return Poll::Ready(None);
            }
            let next = self.ended.ids.borrow_mut().pop_front();
            let Some(id) = next else {
                self.ended.waker.set(Some(cx.waker().clone()));
                return Poll::Pending;
            };
            let Some(mut handle) = self.tasks.remove(&id) else {
                continue;
            };
            // The future is dropped before the outcome is stored, in the same step of
            // the runtime: by the time the set's owner runs, the outcome is there.
            match Pin::new(&mut handle).poll(cx) {
                Poll::Ready(outcome) => return Poll::Ready(Some(outcome)),
                Poll::Pending => {
                    // Not yet (the set's owner runs inside that step: a destructor of
                    // the task's future polled it): look again at the next wake.
                    self.tasks.insert(id, handle);
                    self.ended.ids.borrow_mut().push_front(id);
                    return Poll::Pending;
                }
            }
        }
    }

    /// Aborts every task in the set: each is cancelled the next time the runtime runs,
    /// and `join_next` then gives [`JoinError::Cancelled`] for those that had not ended.
    pub fn abort_all(&self) {
        self.tasks.values().for_each(JoinHandle::abort);
    }

    /// Tasks in the set: running, or ended and not yet joined.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set holds no task.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

impl<T: 'static> Default for JoinSet<T> {
    fn default() -> JoinSet<T> {
        JoinSet::new()
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        self.tasks.values().for_each(JoinHandle::abort);
    }
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinSet")
            .field("len", &self.tasks.len())
            .finish()
    }
}
