//! Watching a thread's load: progress once a second, and giving up on a stalled one.

use std::io::{self, IsTerminal};
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use coop::time::sleep_until;

use super::load::Load;
use super::report::{Faults, Tally};
use super::series;

/// Waits until every connection is done, showing progress once a second; gives up when
/// no reply has come for `stall`.
pub(super) async fn watch(load: &Load, start: Instant, stall: Duration, progress: &Progress) {
    let mut tick = sleep_until(start + Duration::from_secs(1));
    let mut last_count = 0;
    let mut last_progress = start;
    // The counts when the second under way began (`--series`).
    let mut second = (0, Faults::default(), 0);
    let mut ticks = 0;
    loop {
        let all_done = std::future::poll_fn(|cx| {
            if load.live.get() == 0 {
                return Poll::Ready(true);
            }
            load.watcher.set(Some(cx.waker().clone()));
            Pin::new(&mut tick).poll(cx).map(|()| false)
        })
        .await;
        if all_done {
            series::tick(&mut load.tally.borrow_mut(), &mut second);
            return;
        }
        series::tick(&mut load.tally.borrow_mut(), &mut second);
        let now = Instant::now();
        let count = load.tally.borrow().messages;
        progress.show(now - start, count, &load.tally.borrow());
        if count != last_count {
            last_count = count;
            last_progress = now;
        } else if now - last_progress >= stall {
            let mut tally = load.tally.borrow_mut();
            let waiting = load.live.get();
            tally.errors += waiting as u64;
            tally.faults.stalled += waiting as u64;
            series::tick(&mut tally, &mut second);
            tally.fail(format!(
                "no reply for {:.0} s: gave up on {waiting} connections",
                stall.as_secs_f64()
            ));
            return;
        }
        // On the run's own clock, second after second: a late tick does not shift the
        // rest, and every thread's seconds are the same seconds.
        ticks += 1;
        tick.reset(start + Duration::from_secs(ticks + 1));
    }
}

/// Once-a-second progress: a bar on a terminal, plain lines otherwise.
pub(super) struct Progress {
    pub(super) bar: Option<indicatif::ProgressBar>,
    pub(super) lines: bool,
}

impl Progress {
    pub(super) fn new(quiet: bool, duration: Option<Duration>) -> Progress {
        if quiet {
            return Progress {
                bar: None,
                lines: false,
            };
        }
        if !io::stderr().is_terminal() {
            return Progress {
                bar: None,
                lines: true,
            };
        }
        let bar = match duration {
            Some(d) => indicatif::ProgressBar::new(d.as_secs()),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        Progress {
            bar: Some(bar),
            lines: false,
        }
    }

    pub(super) fn show(&self, elapsed: Duration, messages: u64, tally: &Tally) {
        let rate = messages as f64 / elapsed.as_secs_f64();
        let p99 = tally.latency.value_at_quantile(0.99) as f64 / 1000.0;
        let line = format!(
            "{messages} replies, {rate:.0} msg/s, p99 {p99:.0} µs, {} errors",
            tally.errors + tally.mismatches
        );
        if let Some(bar) = &self.bar {
            bar.set_position(elapsed.as_secs());
            bar.set_message(line);
        } else if self.lines {
            eprintln!("[{:>4.0}s] {line}", elapsed.as_secs_f64());
        }
    }

    pub(super) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
