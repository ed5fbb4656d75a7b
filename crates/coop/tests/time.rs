//! Timers: order, precision, and cancellation that leaves nothing behind.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use coop::time::{Elapsed, sleep, sleep_until, timeout};
use coop::{Runtime, spawn, yield_now};

mod common;
use common::{LIMIT, bounded};

/// Timers set in a scrambled order fire in deadline order, none early.
///
/// Order is judged among the timers whose deadline was still ahead once every one was
/// set: one that was already due when its task first polled it (a slow machine, Miri)
/// fires at once, in the order the tasks ran, and says nothing about the timers.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn many_timers_fire_in_deadline_order() {
    let fired = Rc::new(RefCell::new(Vec::new()));
    // Far enough ahead that registering 101 timers takes a fraction of it.
    let start = Instant::now() + Duration::from_millis(100);
    let registered = coop::block_on({
        let fired = Rc::clone(&fired);
        async move {
            // 0, 37, 74, ... mod 101: every delay from 0 to 100 ms once, out of order.
            let tasks: Vec<_> = (0..101u64)
                .map(|i| (i * 37) % 101)
                .map(|ms| {
                    let fired = Rc::clone(&fired);
                    spawn(async move {
                        let deadline = start + Duration::from_millis(ms);
                        sleep_until(deadline).await;
                        assert!(Instant::now() >= deadline, "fired early");
                        fired.borrow_mut().push(ms);
                    })
                })
                .collect();
            // Every task has polled its sleep once: each is set, or was due.
            yield_now().await;
            let registered = Instant::now();
            for task in tasks {
                task.await.unwrap();
            }
            registered
        }
    });
    let fired = fired.borrow();
    assert_eq!(fired.len(), 101);
    let ahead: Vec<u64> = fired
        .iter()
        .copied()
        .filter(|&ms| start + Duration::from_millis(ms) > registered)
        .collect();
    // Timers already due at registration fire at once, in no order: the check is on the
    // rest, and there must be a rest to check.
    assert!(
        ahead.len() >= 50,
        "only {} of 101 timers were ahead at registration: nothing checked",
        ahead.len()
    );
    assert!(ahead.is_sorted(), "out of deadline order: {ahead:?}");
}

#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn timeout_gives_the_output_or_elapsed() {
    coop::block_on(async {
        assert_eq!(timeout(Duration::from_secs(10), async { 5 }).await, Ok(5));
        let start = Instant::now();
        let late = timeout(Duration::from_millis(20), sleep(Duration::from_secs(10))).await;
        let elapsed: Elapsed = late.unwrap_err();
        assert_eq!(elapsed.to_string(), "deadline has elapsed");
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(20) && waited < Duration::from_secs(5));
    });
}

/// A `timeout` whose future wins takes its timer out with it: a million would leave
/// nothing.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_dropped_timeout_leaves_nothing_behind() {
    let runtime = Runtime::new().unwrap();
    runtime.block_on(async {
        for _ in 0..10_000 {
            let quick = timeout(Duration::from_secs(3600), coop::yield_now()).await;
            assert!(quick.is_ok());
        }
        let pending = sleep(Duration::from_secs(3600));
        let mut pending = std::pin::pin!(pending);
        assert!(futures_poll_once(pending.as_mut()).await.is_pending());
        assert_eq!(runtime.stats().timers, 1, "a pending sleep has one entry");
    });
    assert_eq!(runtime.stats().timers, 0, "dropped sleeps leave no entry");
}

/// Polls `future` once, from inside a task.
async fn futures_poll_once<F: std::future::Future>(
    mut future: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(future.as_mut().poll(cx))).await
}

/// A sleep too long to represent never fires, and does not break the loop.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn an_endless_sleep_is_just_pending() {
    coop::block_on(async {
        let forever = timeout(Duration::from_millis(10), sleep(Duration::MAX)).await;
        assert!(forever.is_err());
    });
}

/// Timers wake the runtime when they are due, not on the OS poll's millisecond grid: a
/// 200 µs sleep takes less than a 1 ms sleep, measured side by side (`epoll_wait`'s
/// millisecond timeout would round both up to the same millisecond or more).
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn short_sleeps_are_not_rounded_up_to_milliseconds() {
    fn median_of(sleep_for: Duration) -> Duration {
        let mut took: Vec<Duration> = coop::block_on(async move {
            let mut took = Vec::new();
            for _ in 0..21 {
                let start = Instant::now();
                sleep(sleep_for).await;
                took.push(start.elapsed());
            }
            took
        });
        took.sort();
        assert!(took[0] >= sleep_for, "never early: {took:?}");
        took[took.len() / 2]
    }
    let short = median_of(Duration::from_micros(200));
    let long = median_of(Duration::from_millis(1));
    assert!(
        short < long,
        "200 µs sleeps took {short:?}, 1 ms sleeps {long:?}"
    );
}

/// A task that loops on sleeps already due (a stats loop that fell behind) still lets the
/// others run: an elapsed sleep spends budget like a ready socket.
#[test]
fn elapsed_sleeps_do_not_starve_other_tasks() {
    use std::cell::Cell;
    let turns = Rc::new(Cell::new(0u32));
    coop::block_on({
        let turns = Rc::clone(&turns);
        async move {
            let other = spawn({
                let turns = Rc::clone(&turns);
                async move {
                    loop {
                        turns.set(turns.get() + 1);
                        coop::yield_now().await;
                    }
                }
            });
            let past = Instant::now() - Duration::from_secs(1);
            for _ in 0..10_000 {
                sleep_until(past).await;
            }
            drop(other);
        }
    });
    assert!(
        turns.get() >= 10_000 / 128 - 1,
        "the other task ran {} times",
        turns.get()
    );
}

/// A `Sleep` first polled in one task, then handed to a task spawned after the first
/// ended, wakes the second. (The new task's waker is often allocated where the first's
/// was; a `Sleep` that knew its waker by address took the dead task for the living one
/// and never woke it. Found by a review that tried to break the library.)
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_sleep_handed_to_a_new_task_wakes_it() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    coop::block_on(async {
        for round in 0..50 {
            let slot: Rc<RefCell<Option<Pin<Box<coop::time::Sleep>>>>> = Rc::default();
            let first = Rc::clone(&slot);
            spawn(async move {
                let mut sleeping = Box::pin(sleep(Duration::from_millis(5)));
                // Registered with this task's own waker.
                std::future::poll_fn(|cx| {
                    assert!(sleeping.as_mut().poll(cx).is_pending());
                    Poll::Ready(())
                })
                .await;
                *first.borrow_mut() = Some(sleeping);
            })
            .await
            .unwrap();
            let second = spawn(async move {
                let sleeping = slot.borrow_mut().take().unwrap();
                sleeping.await;
            });
            match timeout(Duration::from_secs(10), second).await {
                Ok(done) => done.unwrap(),
                Err(_) => panic!("round {round}: the sleep never woke its new task"),
            }
        }
    });
}

/// The alarm is set for the earliest timer only. When that timer goes before its
/// deadline, the alarm rings for nothing, and must then be set for the next one; if it
/// were not, nothing would ever wake the runtime again.
#[test]
#[cfg_attr(miri, ignore = "Miri has no sockets, timerfd or /proc")]
fn a_timer_fires_after_the_earlier_one_is_dropped() {
    let waited = bounded(LIMIT, || {
        coop::block_on(async {
            let start = Instant::now();
            let early = spawn(sleep(Duration::from_millis(5)));
            let late = spawn(sleep(Duration::from_millis(30)));
            // Both are registered, and the alarm is set for the early one.
            coop::yield_now().await;
            early.abort();
            late.await.unwrap();
            start.elapsed()
        })
    });
    assert!(waited >= Duration::from_millis(30));
}

/// Ticks keep the schedule's phase; a late tick is given once, and the ticks missed
/// meanwhile are skipped, not made up in a burst.
#[test]
#[cfg_attr(miri, ignore = "Miri has no timerfd")]
fn an_interval_skips_missed_ticks_and_keeps_its_phase() {
    let period = Duration::from_millis(10);
    coop::block_on(async {
        let start = Instant::now();
        let mut ticks = coop::time::interval_at(start, period);
        assert_eq!(ticks.tick().await, start);
        let second = ticks.tick().await;
        assert_eq!(second, start + period);
        assert!(Instant::now() >= second, "ticked early");
        // The task is busy (blocks its thread) for over three periods.
        std::thread::sleep(period * 7 / 2);
        let late = ticks.tick().await;
        let given_at = Instant::now();
        assert_eq!(late, start + 2 * period, "the late tick is given once");
        let next = ticks.tick().await;
        assert!(
            next > given_at,
            "a missed tick was made up: due {next:?}, late one given at {given_at:?}"
        );
        assert_eq!(
            (next - start).as_nanos() % period.as_nanos(),
            0,
            "the phase moved"
        );
        assert!(Instant::now() >= next, "ticked early");
    });
}

/// A tick dropped before it is due takes no tick: the next `tick` gets it.
#[test]
#[cfg_attr(miri, ignore = "Miri has no timerfd")]
fn a_dropped_tick_takes_no_tick() {
    coop::block_on(async {
        let start = Instant::now() + Duration::from_millis(30);
        let mut ticks = coop::time::interval_at(start, Duration::from_secs(3600));
        assert!(
            timeout(Duration::from_millis(1), ticks.tick())
                .await
                .is_err()
        );
        assert_eq!(ticks.tick().await, start);
        assert_eq!(ticks.period(), Duration::from_secs(3600));
    });
}

#[test]
#[should_panic(expected = "the period must not be zero")]
fn an_interval_of_zero_is_refused() {
    let _ = coop::time::interval(Duration::ZERO);
}

/// `timeout_at`: a ready future wins even past the deadline; a pending one loses once
/// it passes.
#[test]
#[cfg_attr(miri, ignore = "Miri has no timerfd")]
fn timeout_at_shares_one_deadline() {
    coop::block_on(async {
        let deadline = Instant::now() + Duration::from_millis(20);
        let first = coop::time::timeout_at(deadline, sleep(Duration::from_millis(1))).await;
        assert_eq!(first, Ok(()));
        let second = coop::time::timeout_at(deadline, std::future::pending::<()>()).await;
        assert!(second.is_err());
        assert!(Instant::now() >= deadline);
        let past = coop::time::timeout_at(deadline, async { 3 }).await;
        assert_eq!(past, Ok(3));
    });
}
