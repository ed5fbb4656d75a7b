//! `JoinSet`: outcomes in the order tasks end, panics and aborts as outcomes, and a set
//! dropped with tasks in it cancels them.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use coop::time::timeout;
use coop::{JoinError, JoinSet, yield_now};

mod common;
use common::{LIMIT, bounded};

/// Counts the futures dropped.
struct Dropped(Rc<Cell<usize>>);

impl Drop for Dropped {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn outcomes_come_in_the_order_tasks_end() {
    coop::block_on(async {
        let mut set = JoinSet::new();
        assert!(
            set.join_next().await.is_none(),
            "an empty set gives None at once"
        );
        // Task i yields 9 - i times: they end in reverse order of spawning.
        for i in 0..10u32 {
            set.spawn(async move {
                for _ in 0..(9 - i) {
                    yield_now().await;
                }
                i
            });
        }
        assert_eq!(set.len(), 10);
        let mut order = Vec::new();
        while let Some(outcome) = set.join_next().await {
            order.push(outcome.unwrap());
        }
        assert_eq!(order, (0..10).rev().collect::<Vec<_>>());
        assert!(set.is_empty());
    });
}

#[test]
fn a_panic_is_an_outcome_and_the_set_goes_on() {
    coop::block_on(async {
        let mut set = JoinSet::new();
        set.spawn(async { panic!("one bad task") });
        set.spawn(async { 7 });
        let mut panics = 0;
        let mut outputs = Vec::new();
        while let Some(outcome) = set.join_next().await {
            match outcome {
                Ok(value) => outputs.push(value),
                Err(e) => {
                    assert_eq!(e.panic_message(), Some("one bad task"));
                    panics += 1;
                }
            }
        }
        assert_eq!((panics, outputs), (1, vec![7]));
    });
}

/// `abort_all` cancels what is still running; what had ended keeps its outcome.
#[test]
fn abort_all_cancels_the_running_ones() {
    coop::block_on(async {
        let dropped = Rc::new(Cell::new(0));
        let mut set = JoinSet::new();
        set.spawn(async { 1 });
        yield_now().await; // the first has ended
        for _ in 0..3 {
            let guard = Dropped(Rc::clone(&dropped));
            set.spawn(async move {
                let _guard = guard;
                std::future::pending::<u8>().await
            });
        }
        set.abort_all();
        let (mut finished, mut cancelled) = (0, 0);
        while let Some(outcome) = set.join_next().await {
            match outcome {
                Ok(1) => finished += 1,
                Err(JoinError::Cancelled) => cancelled += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!((finished, cancelled, dropped.get()), (1, 3, 3));
    });
}

/// A set dropped with tasks in it cancels them: their futures are dropped the next time
/// the runtime runs.
#[test]
fn a_dropped_set_cancels_its_tasks() {
    coop::block_on(async {
        let dropped = Rc::new(Cell::new(0));
        let mut set = JoinSet::new();
        for _ in 0..5 {
            let guard = Dropped(Rc::clone(&dropped));
            set.spawn(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            });
        }
        yield_now().await;
        assert_eq!(dropped.get(), 0);
        drop(set);
        yield_now().await;
        assert_eq!(dropped.get(), 5);
    });
}

/// A `join_next` dropped before it completes takes nothing: the next one gets it.
#[test]
fn a_dropped_join_next_takes_nothing() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let mut set = JoinSet::new();
            set.spawn(async {
                coop::time::sleep(Duration::from_millis(20)).await;
                "late"
            });
            assert!(
                timeout(Duration::from_millis(1), set.join_next())
                    .await
                    .is_err()
            );
            assert_eq!(set.len(), 1);
            assert_eq!(set.join_next().await.unwrap().unwrap(), "late");
            assert!(set.join_next().await.is_none());
        });
    });
}

/// Many tasks: every outcome comes back once.
#[test]
fn ten_thousand_tasks_each_come_back_once() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let mut set = JoinSet::new();
            for i in 0..10_000u64 {
                set.spawn(async move {
                    yield_now().await;
                    i
                });
            }
            let mut sum = 0;
            let mut count = 0;
            while let Some(outcome) = set.join_next().await {
                sum += outcome.unwrap();
                count += 1;
            }
            assert_eq!((count, sum), (10_000, (0..10_000).sum()));
        });
    });
}
