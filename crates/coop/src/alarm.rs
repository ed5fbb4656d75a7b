//! The alarm: wakes the OS poll at the earliest timer's deadline, to the nanosecond.
//!
//! `epoll_wait` takes its timeout in milliseconds, so a poll that waits for a timer
//! wakes up to a millisecond late. Instead, one `timerfd` per runtime sits in the poll
//! like a socket, armed for the earliest deadline; the poll itself then waits with no
//! timeout. Re-arming costs a system call, so the alarm is re-armed only when a timer
//! earlier than the one it is set for appears, or after it rings: a runtime whose timers
//! lie in the future (idle timeouts) leaves it alone.

use std::cell::Cell;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

/// The token the alarm rings under; below the inbox's, above any socket's.
pub(crate) const ALARM: u64 = u64::MAX - 1;

pub(crate) struct Alarm {
    fd: OwnedFd,
    /// When it will ring, if armed.
    armed: Cell<Option<Instant>>,
}

impl Alarm {
    pub(crate) fn new(epoll: BorrowedFd<'_>) -> io::Result<Alarm> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        epoll::add(
            epoll,
            &fd,
            EventData::new_u64(ALARM),
            EventFlags::IN | EventFlags::ET,
        )?;
        Ok(Alarm {
            fd,
            armed: Cell::new(None),
        })
    }

    /// Whether the alarm is set to ring by `deadline` already.
    #[inline]
    pub(crate) fn covers(&self, deadline: Instant) -> bool {
        self.armed.get().is_some_and(|armed| armed <= deadline)
    }

    /// Makes sure the alarm rings by `deadline` (which is after `now`).
    pub(crate) fn set(&self, deadline: Instant, now: Instant) -> io::Result<()> {
        if self.covers(deadline) {
            return Ok(());
        }
        let wait = deadline
            .saturating_duration_since(now)
            .max(Duration::from_nanos(1));
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: wait.as_secs().try_into().unwrap_or(i64::MAX),
                tv_nsec: wait.subsec_nanos().into(),
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        self.armed.set(Some(deadline));
        Ok(())
    }

    /// The alarm rang: it is no longer armed. (Edge-triggered, it need not be read: the
    /// next expiry is a new edge.)
    pub(crate) fn rang(&self) {
        self.armed.set(None);
    }
}
