//! The invariants coop's two `unsafe` blocks rely on: a task's future is pinned, it never
//! moves between polls, however the task table grows meanwhile; and the runtime's
//! reference to a task stays valid through its poll, however that poll grows the table.
//! Needs no sockets, so it runs under Miri too (`cargo +nightly miri test -p coop --test
//! task`).

use std::cell::Cell;
use std::future::Future;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use coop::{spawn, yield_now};

/// Remembers where it was first polled, and checks it is there at every poll; it is
/// `!Unpin`, like any async block that borrows across an await.
struct StaysPut {
    at: Option<usize>,
    polls: Rc<Cell<u32>>,
    _pinned: PhantomPinned,
}

impl Future for StaysPut {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        // SAFETY: nothing is moved out; only plain fields are written.
        #[allow(unsafe_code)]
        let this = unsafe { self.get_unchecked_mut() };
        let here = std::ptr::from_mut(this) as usize;
        match this.at {
            None => this.at = Some(here),
            Some(at) => assert_eq!(at, here, "the future moved while pinned"),
        }
        this.polls.set(this.polls.get() + 1);
        if this.polls.get() == 10 {
            return Poll::Ready(here);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[test]
fn a_task_stays_put_while_the_table_grows() {
    coop::block_on(async {
        let polls = Rc::new(Cell::new(0));
        let task = spawn(StaysPut {
            at: None,
            polls: Rc::clone(&polls),
            _pinned: PhantomPinned,
        });
        // Grow the task table between its polls: a table that moved its tasks would
        // move the future with them.
        let mut others = Vec::new();
        while polls.get() < 10 {
            others.extend((0..50).map(|i| spawn(async move { i })));
            yield_now().await;
        }
        task.await.unwrap();
        for (i, other) in others.into_iter().enumerate() {
            assert_eq!(other.await.unwrap(), i % 50);
        }
    });
}

/// The runtime polls a task through a reference to its allocation, not a clone of its
/// `Rc`: tasks that grow the task table inside their own poll (moving every slot, theirs
/// included) run on and end through it, by returning or by panicking.
#[test]
fn a_task_that_grows_the_table_in_its_own_poll_runs_on_and_ends() {
    coop::block_on(async {
        let grower = spawn(async {
            let mut others = Vec::new();
            for _ in 0..3 {
                others.extend((0..100).map(|i| spawn(async move { i })));
                yield_now().await;
            }
            let mut sum = 0;
            for other in others {
                sum += other.await.unwrap();
            }
            sum
        });
        let panicker = spawn(async {
            let others: Vec<_> = (0..100).map(|i| spawn(async move { i })).collect();
            drop(others);
            panic!("after growing the table");
        });
        assert_eq!(grower.await.unwrap(), 3 * (0..100).sum::<usize>());
        assert!(panicker.await.unwrap_err().is_panic());
    });
}

/// Sums 1, 2, 3 through a reference to its own local, held across awaits: a
/// self-referential future, as async blocks often are.
async fn self_borrowing_sum() -> u64 {
    let data = vec![1u64, 2, 3];
    let view = &data;
    let mut sum = 0;
    for x in view {
        yield_now().await;
        sum += x;
    }
    sum
}

/// An async block that borrows its own local across awaits (self-referential) runs to
/// its end, its output handed over intact.
#[test]
fn a_self_borrowing_async_block_completes() {
    let total = coop::block_on(async { spawn(self_borrowing_sum()).await });
    assert_eq!(total.unwrap(), 6);
}

/// A task suspended inside a self-borrowing future is asked about through its
/// `JoinHandle` between its polls, again and again: asking must not touch the future's
/// memory. (Reading the task's stage through a reference did, which Miri's Stacked
/// Borrows reports as undefined behaviour: run this under Miri.)
#[test]
fn a_join_handle_asked_while_its_task_is_suspended() {
    let total = coop::block_on(async {
        let mut task = spawn(self_borrowing_sum());
        while !task.is_finished() {
            assert!(futures::poll!(&mut task).is_pending());
            yield_now().await;
        }
        task.await
    });
    assert_eq!(total.unwrap(), 6);
}
