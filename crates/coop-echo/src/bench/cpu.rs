//! CPU time, from the scheduler's own nanosecond accounting in /proc.

use std::time::Duration;

/// CPU time (user + system) of every thread of process `pid`, from the scheduler's own
/// nanosecond accounting.
pub(super) fn cpu_time_of(pid: u32) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        total += schedstat(&task.ok()?.path())?;
    }
    Some(total)
}

/// CPU time (user + system) of the calling thread so far.
pub(super) fn thread_cpu_time() -> Option<Duration> {
    schedstat(std::path::Path::new("/proc/thread-self"))
}

/// The CPU time in `schedstat` under a task's /proc directory.
fn schedstat(task: &std::path::Path) -> Option<Duration> {
    let stat = std::fs::read_to_string(task.join("schedstat")).ok()?;
    Some(Duration::from_nanos(
        stat.split_whitespace().next()?.parse().ok()?,
    ))
}
