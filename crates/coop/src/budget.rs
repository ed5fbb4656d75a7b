//! Fairness: how much a task may do before it must let the others run.
//!
//! The seed is fair by construction: every `recv` yields to the scheduler first. coop
//! skips that round trip when a socket is already ready, so a client that floods could
//! keep its task running forever. Each poll of a task therefore starts with a budget;
//! every readiness check that finds the socket ready spends one unit, and when none is
//! left the task is sent to the back of the ready queue as if it had yielded.

use std::cell::Cell;
use std::task::{Context, Poll};

/// Operations that found their socket ready, per poll of a task.
///
/// Large enough that a busy connection moves ~2 MiB (128 reads of 16 KiB) per turn; small
/// enough that 10,000 ready tasks each wait for at most one turn of every other.
pub(crate) const PER_POLL: u32 = 128;

thread_local! {
    static BUDGET: Cell<u32> = const { Cell::new(PER_POLL) };
}

/// Called by the scheduler before each poll of a task.
#[inline]
pub(crate) fn reset() {
    BUDGET.set(PER_POLL);
}

/// Spends one unit, or, when the budget is spent, wakes the task and returns `Pending`.
#[inline]
pub(crate) fn poll_spend(cx: &mut Context<'_>) -> Poll<()> {
    match BUDGET.get() {
        0 => {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
        left => {
            BUDGET.set(left - 1);
            Poll::Ready(())
        }
    }
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
