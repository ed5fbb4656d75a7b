//! The waiting areas: which task waits for which socket, and the one OS poll for all.
//!
//! The seed keeps two dicts, `recv_wait` and `send_wait`, and calls `select()` on their
//! keys whenever no task is ready. Here every socket is a [`Source`] with two waiting
//! slots (read and write), and the OS poll is epoll (kqueue on BSDs) through `mio`.
//!
//! What the seed gets wrong and this does not:
//!
//! * `select()` rebuilds its interest set on every call and stops at 1,024 sockets. A
//!   socket here is registered once, edge-triggered, for both directions, when it is
//!   created; closing it removes it.
//! * The seed waits *before* every `recv`, a round trip through the OS even when data is
//!   already there. Here readiness is cached: an operation is tried first, and the task
//!   parks only when the OS says `WouldBlock`, which is also the only thing that clears
//!   the cache (besides a short read or write, which proves the same without one more
//!   system call).

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::{Events, Interest, Poll as OsPoll, Token};

use crate::alarm::{ALARM, Alarm};
use crate::budget;
use crate::scheduler;
use crate::slab::{Key, Slab};
use crate::task::Task;
use crate::trace::{self, Area};

/// Which waiting area: the seed's `recv_wait` or `send_wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read = 0,
    Write = 1,
}

// Cached readiness bits. The `*_CLOSED` bits are never cleared: once a peer has hung
// up, every later operation must get to see it. `ERROR` goes with a `WouldBlock`, like
// readiness: an error the OS reported once and then took back must not make a task spin.
const READABLE: u8 = 1 << 0;
const WRITABLE: u8 = 1 << 1;
const READ_CLOSED: u8 = 1 << 2;
const WRITE_CLOSED: u8 = 1 << 3;
const ERROR: u8 = 1 << 4;

impl Direction {
    fn area(self) -> Area {
        match self {
            Direction::Read => Area::Read,
            Direction::Write => Area::Write,
        }
    }

    /// Bits that let an operation in this direction proceed.
    fn ready_mask(self) -> u8 {
        match self {
            Direction::Read => READABLE | READ_CLOSED | ERROR,
            Direction::Write => WRITABLE | WRITE_CLOSED | ERROR,
        }
    }

    /// The bits a `WouldBlock` proves stale.
    fn clear_mask(self) -> u8 {
        match self {
            Direction::Read => READABLE | ERROR,
            Direction::Write => WRITABLE | ERROR,
        }
    }
}

/// Who waits in a waiting area.
enum Waiter {
    /// A coop task parked by its own waker: held as is, and scheduled directly when the
    /// socket turns ready (no virtual call, no atomic).
    Task(Rc<Task>),
    /// Anything else that gave a waker (a combinator's, another executor's).
    Waker(Waker),
}

/// One registered socket: its cached readiness and the tasks parked on it.
///
/// Usually one task waits in each direction (a connection's handler; or a reading and a
/// writing task). Its waiter stays in its slot after it is woken, so a task that parks on
/// the same socket again (every message, for an echo) costs nothing but a comparison.
/// Further tasks waiting in the same direction (several tasks accepting on one listener)
/// wait in a list, and all of them are woken together.
#[derive(Default)]
pub(crate) struct Source {
    /// The socket's descriptor, for traces.
    fd: i32,
    readiness: Cell<u8>,
    /// Bit `1 << dir` is set while a task is parked in that direction.
    parked: Cell<u8>,
    waiters: [RefCell<Waiters>; 2],
}

#[derive(Default)]
struct Waiters {
    first: Option<Waiter>,
    others: Vec<Waker>,
}

impl Waiter {
    fn will_wake(&self, waker: &Waker) -> bool {
        match self {
            Waiter::Task(task) => task.waker().will_wake(waker),
            Waiter::Waker(own) => own.will_wake(waker),
        }
    }
}

impl Source {
    /// `Ready` if the socket may be ready in `dir` (after spending fairness budget);
    /// otherwise parks the task in the waiting area.
    #[inline]
    pub(crate) fn poll_ready(&self, dir: Direction, cx: &mut Context<'_>) -> Poll<()> {
        if self.readiness.get() & dir.ready_mask() != 0 {
            return budget::poll_spend(cx);
        }
        self.park(dir, cx);
        Poll::Pending
    }

    /// Leaves the task (or its waker) in the waiting area for `dir`.
    fn park(&self, dir: Direction, cx: &mut Context<'_>) {
        let bit = 1 << dir as u8;
        let waker = cx.waker();
        let mut waiters = self.waiters[dir as usize].borrow_mut();
        let is_first = waiters.first.as_ref().is_some_and(|f| f.will_wake(waker));
        if self.parked.get() & bit == 0 {
            // Nobody waits here: this task is the one (and most likely was last time).
            if !is_first {
                waiters.first = Some(match scheduler::polling_task(waker) {
                    Some(task) => Waiter::Task(task),
                    None => Waiter::Waker(waker.clone()),
                });
            }
            self.parked.set(self.parked.get() | bit);
            if trace::enabled() {
                self.trace_park(dir);
            }
        } else if !is_first && !waiters.others.iter().any(|w| w.will_wake(waker)) {
            waiters.others.push(waker.clone());
        }
    }

    #[inline]
    pub(crate) fn is_ready(&self, dir: Direction) -> bool {
        self.readiness.get() & dir.ready_mask() != 0
    }

    /// Forgets readiness in `dir`: the OS said (or a short transfer proved) it is gone.
    #[inline]
    pub(crate) fn clear(&self, dir: Direction) {
        self.readiness.set(self.readiness.get() & !dir.clear_mask());
    }

    /// Runs `op` if the socket may be ready; clears readiness when it would block.
    #[inline]
    pub(crate) fn try_io<R>(
        &self,
        dir: Direction,
        op: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        if !self.is_ready(dir) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let result = op();
        if matches!(&result, Err(e) if e.kind() == io::ErrorKind::WouldBlock) {
            self.clear(dir);
        }
        result
    }

    /// Tries `op`, parking until the socket is ready whenever it would block.
    pub(crate) async fn io<R>(
        &self,
        dir: Direction,
        mut op: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            std::future::poll_fn(|cx| self.poll_ready(dir, cx)).await;
            match self.try_io(dir, &mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    /// Records what the OS reported and wakes the tasks it concerns.
    fn on_event(&self, event: &Event) {
        let mut bits = 0;
        if event.is_readable() {
            bits |= READABLE;
        }
        if event.is_read_closed() {
            bits |= READ_CLOSED;
        }
        if event.is_writable() {
            bits |= WRITABLE;
        }
        if event.is_write_closed() {
            bits |= WRITE_CLOSED;
        }
        if event.is_error() {
            bits |= ERROR;
        }
        self.readiness.set(self.readiness.get() | bits);
        let parked = self.parked.get();
        if parked == 0 {
            return;
        }
        for dir in [Direction::Read, Direction::Write] {
            let bit = 1 << dir as u8;
            if parked & bit != 0 && bits & dir.ready_mask() != 0 {
                self.parked.set(self.parked.get() & !bit);
                self.wake(dir);
            }
        }
    }

    #[cold]
    fn trace_park(&self, dir: Direction) {
        if let Some(task) = scheduler::polling_id() {
            trace::emit(|| trace::Event::Park {
                task,
                area: dir.area(),
                fd: self.fd,
            });
        }
    }

    #[inline]
    fn wake(&self, dir: Direction) {
        let waiters = self.waiters[dir as usize].borrow();
        if let Some(Waiter::Task(task)) = &waiters.first {
            trace::emit(|| trace::Event::Wake {
                task: task.id(),
                area: dir.area(),
                fd: self.fd,
            });
            // Scheduling only pushes on the ready queue: the borrow can stay.
            task.schedule();
            if waiters.others.is_empty() {
                return;
            }
        }
        drop(waiters);
        self.wake_others(dir);
    }

    /// The rest of `wake`: a waiter that gave a foreign waker, and further waiters.
    #[cold]
    fn wake_others(&self, dir: Direction) {
        let slot = &self.waiters[dir as usize];
        // Out of the slot while they run: a waker may be anyone's, and may park again.
        let (first, others) = {
            let mut waiters = slot.borrow_mut();
            let first = match waiters.first {
                Some(Waiter::Waker(_)) => waiters.first.take(),
                _ => None,
            };
            (first, std::mem::take(&mut waiters.others))
        };
        if let Some(Waiter::Waker(waker)) = &first {
            waker.wake_by_ref();
            // Back in its slot for the next park, unless one was parked there meanwhile.
            let mut waiters = slot.borrow_mut();
            if waiters.first.is_none() {
                waiters.first = first;
            }
        }
        others.into_iter().for_each(Waker::wake);
    }
}

/// The token under which the runtime's inbox interrupts the poll. Slab keys never reach
/// it, nor the alarm's: a key's index is below `u32::MAX`.
pub(crate) const INBOX: Token = Token(usize::MAX);

/// What an OS poll found besides sockets.
#[derive(Default)]
pub(crate) struct Woken {
    /// Another thread woke a task: the inbox has work.
    pub(crate) inbox: bool,
    /// A timer may be due.
    pub(crate) timers: bool,
}

/// The OS poll, every registered socket, and the alarm for timers.
pub(crate) struct Reactor {
    poll: RefCell<OsPoll>,
    events: RefCell<Events>,
    sources: RefCell<Slab<Rc<Source>>>,
    alarm: Alarm,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Self> {
        let poll = OsPoll::new()?;
        let alarm = Alarm::new(poll.registry())?;
        Ok(Reactor {
            poll: RefCell::new(poll),
            events: RefCell::new(Events::with_capacity(1024)),
            sources: RefCell::new(Slab::new()),
            alarm,
        })
    }

    pub(crate) fn inbox_waker(&self) -> io::Result<mio::Waker> {
        mio::Waker::new(self.poll.borrow().registry(), INBOX)
    }

    /// Registers `io` once, for both directions, edge-triggered.
    pub(crate) fn register(
        &self,
        io: &mut impl mio::event::Source,
        fd: i32,
    ) -> io::Result<(Key, Rc<Source>)> {
        let source = Rc::new(Source {
            fd,
            ..Source::default()
        });
        let key = self
            .sources
            .borrow_mut()
            .insert_with(|_| Rc::clone(&source));
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered =
            self.poll
                .borrow()
                .registry()
                .register(io, Token(key.to_token()), interest);
        match registered {
            Ok(()) => Ok((key, source)),
            Err(e) => {
                self.sources.borrow_mut().remove(key);
                Err(e)
            }
        }
    }

    /// Forgets a source. Closing its socket is what takes it out of the OS poll: no
    /// system call is spent on `EPOLL_CTL_DEL` for a socket that is about to be closed.
    pub(crate) fn forget(&self, key: Key) {
        let source = self.sources.borrow_mut().remove(key);
        drop(source);
    }

    /// Number of registered sockets.
    pub(crate) fn len(&self) -> usize {
        self.sources.borrow().len()
    }

    /// Tasks parked to read and to write, counted by walking every socket: kept off the
    /// per-message path, paid by whoever asks (a stats scrape).
    pub(crate) fn parked(&self) -> (usize, usize) {
        let sources = self.sources.borrow();
        sources.iter().fold((0, 0), |(read, write), source| {
            let parked = source.parked.get();
            (
                read + usize::from(parked & (1 << Direction::Read as u8) != 0),
                write + usize::from(parked & (1 << Direction::Write as u8) != 0),
            )
        })
    }

    /// Waits for the OS until a socket turns ready, another thread wakes a task, or
    /// `deadline` (a timer's) passes; with `at_once`, does not wait at all. Wakes the
    /// tasks whose sockets turned ready, and says what else needs doing.
    pub(crate) fn poll(&self, at_once: bool, deadline: Option<Instant>) -> io::Result<Woken> {
        let mut woken = Woken::default();
        let mut timeout = if at_once { Some(Duration::ZERO) } else { None };
        // With the alarm set in time there is nothing to compute: when a timer is due,
        // the alarm says so. Only a new, earlier deadline costs a clock read.
        if let Some(deadline) = deadline.filter(|&d| !self.alarm.covers(d)) {
            let now = Instant::now();
            if deadline <= now {
                timeout = Some(Duration::ZERO);
                woken.timers = true;
            } else if self.alarm.set(deadline, now).is_err() {
                // No alarm: wait in the poll itself, to the millisecond.
                timeout = Some(timeout.unwrap_or(deadline - now));
                woken.timers = true;
            }
        }
        let mut events = self.events.borrow_mut();
        match self.poll.borrow_mut().poll(&mut events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(woken),
            Err(e) => return Err(e),
        }
        for event in events.iter() {
            match event.token() {
                INBOX => woken.inbox = true,
                ALARM => {
                    self.alarm.rang();
                    woken.timers = true;
                }
                token => {
                    // Cloned out of the table so that a waker may register or forget
                    // sockets.
                    let source = self.sources.borrow().get(Key::from_token(token.0)).cloned();
                    if let Some(source) = source {
                        source.on_event(event);
                    }
                }
            }
        }
        Ok(woken)
    }
}
/// A socket's place in the reactor, held by the socket for as long as it lives.
pub(crate) struct Registration {
    key: Key,
    source: Rc<Source>,
    reactor: Rc<Reactor>,
}

impl Registration {
    /// Registers `io` with the current runtime's reactor.
    pub(crate) fn new(io: &mut impl mio::event::Source, fd: i32) -> io::Result<Self> {
        let reactor = crate::scheduler::current_reactor()?;
        let (key, source) = reactor.register(io, fd)?;
        Ok(Registration {
            key,
            source,
            reactor,
        })
    }
}

impl std::ops::Deref for Registration {
    type Target = Source;

    fn deref(&self) -> &Source {
        &self.source
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.reactor.forget(self.key);
    }
}
