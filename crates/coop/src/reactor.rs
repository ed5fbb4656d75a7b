//! The waiting areas: which task waits for which socket, and the one OS poll for all.
//!
//! The seed keeps two dicts, `recv_wait` and `send_wait`, and calls `select()` on their
//! keys whenever no task is ready. Here every socket is a [`Source`] with two waiting
//! areas (read and write), and the OS poll is epoll, through rustix's system calls.
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
//!   system call; a short read proves nothing while urgent data is pending).
//!
//! The reactor knows sockets and waiters, not tasks: when a socket turns ready it
//! *reports* the keys of the tasks parked there, and the runtime runs them.
//!
//! # The waiting-area contract
//!
//! * A wake empties the area: every waiter in it is woken once, and must poll again to
//!   wait again. Readiness stays cached until an operation finds it gone.
//! * The `poll_*` methods of the sockets keep one waiter per direction: the most recent
//!   caller's (as `tokio` does). They are for hand-written futures in one task.
//! * The futures (`readable`, `read`, `accept`, ...) each keep their own place: any
//!   number of them may wait at once, in any tasks, and each is woken. A future dropped
//!   before it is woken takes its place back, so nothing accumulates.
//! * Where a waiter is kept is the socket's business, and costs: each direction has one
//!   *task slot*, a key and a few bits, taken by the first task of this runtime to wait
//!   there (through a `poll_*` method, or a future such as `read`); a future in the slot
//!   is known by its address, which pinning keeps fixed. Everyone else waits in the
//!   direction's *area*, allocated the first time it is needed: a `poll_*` caller
//!   that finds the slot held by a future, any waker that is not one of this runtime's
//!   tasks (a combinator's, another runtime's), and further futures, by ticket.
//! * A socket dropped while someone still waits on it wakes them, as a hang-up would. (The
//!   futures borrow their socket and cannot outlive it; a `poll_*` caller can.)
//! * A socket whose idle clock runs out (`TcpStream::set_idle_timeout`) wakes every
//!   waiter in both directions, as an event would, and stays ready: an operation that
//!   then finds nothing to do says `TimedOut` instead of `WouldBlock`, so nobody waits
//!   on it again.

use std::cell::{Cell, OnceCell, RefCell};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{EventfdFlags, eventfd};
use rustix::io::Errno;
use rustix::time::Timespec;

use crate::alarm::{ALARM, Alarm};
use crate::slab::{Key, Slab};
use crate::waiter::{self, Waiter, Who};

/// Which waiting area: the seed's `recv_wait` or `send_wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    Read = 0,
    Write = 1,
}

// Readiness is cached as epoll reports it, flag for flag: nothing to translate per
// event. The hang-up flags are never cleared: once a peer has hung up, every later
// operation must get to see it. `ERR` goes with a `WouldBlock`, like readiness: an error
// the OS reported once and then took back must not make a task spin.
const IN: u32 = EventFlags::IN.bits();
const PRI: u32 = EventFlags::PRI.bits();
const OUT: u32 = EventFlags::OUT.bits();
const ERR: u32 = EventFlags::ERR.bits();
const HUP: u32 = EventFlags::HUP.bits();
const RDHUP: u32 = EventFlags::RDHUP.bits();
/// Not epoll's: set by the socket's idle clock once the peer has been idle for its
/// timeout, and never cleared (epoll reports no flag this high).
const IDLE: u32 = 1 << 24;

impl Direction {
    /// Flags that let an operation in this direction proceed.
    fn ready_mask(self) -> u32 {
        match self {
            Direction::Read => IN | PRI | RDHUP | HUP | ERR | IDLE,
            Direction::Write => OUT | HUP | ERR | IDLE,
        }
    }

    /// The bits a `WouldBlock` proves stale.
    fn clear_mask(self) -> u32 {
        match self {
            Direction::Read => IN | PRI | ERR,
            Direction::Write => OUT | ERR,
        }
    }
}

/// A future's place in a waiting area: its number there, to find it again or take it
/// back. Numbers are never reused (64 bits do not wrap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// One direction's waiters other than a task parked by the `poll_*` methods.
#[derive(Default)]
struct Area {
    /// The `poll_*` methods' waiter when it cannot have the task slot: it is not a task of
    /// this runtime, or a future holds the slot.
    latest: Option<Waiter>,
    /// The futures' waiters, by ticket (usually none or one).
    queue: Vec<(Ticket, Waiter)>,
    next_ticket: u64,
}

// Who waits, per direction, in `Source::parked`: a task in the task slot (its key in
// `Source::task`), or anyone in the `Area` (a waker, or a future's waiter). `FUTURE` goes
// with `TASK` when the slot is held by a future (the one at `Source::claim`) rather than
// by the `poll_*` methods.
const TASK: [u8; 2] = [1 << 0, 1 << 1];
const AREA: [u8; 2] = [1 << 2, 1 << 3];
const FUTURE: [u8; 2] = [1 << 4, 1 << 5];

/// One registered socket: its cached readiness and the waiters parked on it.
///
/// The common waiter (one task, parked by a `poll_*` method or by a future such as
/// `read`, as a connection's handler does at every message) takes the task slot, at the
/// cost of a few stores and no borrow; everyone else waits in the `Area`.
#[derive(Default)]
pub(crate) struct Source {
    /// The socket's descriptor, for traces.
    fd: i32,
    readiness: Cell<u32>,
    parked: Cell<u8>,
    /// The task slot, per direction: the task that waits there. Kept after a wake (only
    /// `parked` says whether it waits), so that parking the same task again is a
    /// comparison.
    task: [Cell<Option<Key>>; 2],
    /// The address of the future that holds the task slot, when `FUTURE` says one does
    /// (compared, never followed: the future is pinned while it holds it).
    claim: [Cell<usize>; 2],
    /// Made when someone other than a `poll_*` task first waits here: most sockets (a
    /// connection's handler's) never need one, and an idle connection is lighter for it.
    areas: [RefCell<Option<Box<Area>>>; 2],
    /// Something was read or written since the idle clock last looked.
    heard: Cell<bool>,
    /// The idle clock, while one runs.
    idle: Cell<Option<Idle>>,
}

/// A socket's idle clock: a timer every quarter of the timeout looks whether the socket
/// was `heard` since the last one, and after four quiet quarters in a row the socket is
/// idle. So a silent peer is idle after between one and one and a quarter timeouts, and
/// a busy socket pays one store per operation, not a timer.
#[derive(Clone, Copy)]
pub(crate) struct Idle {
    quarter: Duration,
    quiet: u8,
    /// The next look's timer: its deadline and key.
    timer: (Instant, Key),
}

impl Source {
    pub(crate) fn fd(&self) -> i32 {
        self.fd
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

    /// A read took less than it asked for, which proves the receive queue empty (data
    /// that comes later brings a new edge) unless urgent data is pending: TCP stops a
    /// read at the urgent mark with ordinary data queued behind it, and that data brings
    /// no new edge. epoll reports urgent data as `PRI`; with it, readiness stays, and the
    /// next read's `WouldBlock` clears both.
    #[inline]
    pub(crate) fn read_short(&self) {
        let readiness = self.readiness.get();
        if readiness & PRI == 0 {
            self.readiness
                .set(readiness & !Direction::Read.clear_mask());
        }
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
            if self.readiness.get() & IDLE != 0 {
                // Nothing to do, and the peer idle: waiting again would wait for good.
                return Err(io::ErrorKind::TimedOut.into());
            }
        }
        result
    }

    /// Notes that the peer made progress: something was read or written.
    #[inline]
    pub(crate) fn heard(&self) {
        self.heard.set(true);
    }

    /// Starts the idle clock, with a quarter of the timeout per look, the first at
    /// `timer`.
    pub(crate) fn start_idle(&self, quarter: Duration, timer: (Instant, Key)) {
        self.heard.set(false);
        self.idle.set(Some(Idle {
            quarter,
            quiet: 0,
            timer,
        }));
    }

    /// Stops the idle clock, and the socket is no longer idle. Returns the clock's
    /// pending timer, for the caller to remove.
    pub(crate) fn stop_idle(&self) -> Option<(Instant, Key)> {
        self.readiness.set(self.readiness.get() & !IDLE);
        self.idle.take().map(|idle| idle.timer)
    }

    /// The idle clock's timer fired: a quarter without a word counts, and the fourth in a
    /// row makes the socket idle (returned: its waiters, woken as by an event); any other
    /// quarter sets the next timer through `rearm`.
    fn idle_tick(&self, rearm: impl FnOnce(Duration) -> (Instant, Key)) -> Fired {
        let Some(mut idle) = self.idle.get() else {
            return Fired::Nobody;
        };
        if self.heard.replace(false) {
            idle.quiet = 0;
        } else {
            idle.quiet += 1;
        }
        if idle.quiet >= 4 {
            self.idle.set(None);
            return self.on_event(IDLE);
        }
        idle.timer = rearm(idle.quarter);
        self.idle.set(Some(idle));
        Fired::Nobody
    }

    /// Parks `who` as the one waiter of the `poll_*` methods in `dir`, replacing the
    /// previous one. Returns whether it was not parked there already.
    #[inline(always)]
    pub(crate) fn park_latest(&self, dir: Direction, who: Who<'_>) -> bool {
        let d = dir as usize;
        let parked = self.parked.get();
        match who {
            Who::Task(key) if parked & (AREA[d] | FUTURE[d]) == 0 => {
                if parked & TASK[d] != 0 && self.task[d].get() == Some(key) {
                    return false;
                }
                self.task[d].set(Some(key));
                self.parked.set(parked | TASK[d]);
                true
            }
            _ => self.park_latest_slow(dir, who),
        }
    }

    #[cold]
    fn park_latest_slow(&self, dir: Direction, who: Who<'_>) -> bool {
        let d = dir as usize;
        let mut guard = self.areas[d].borrow_mut();
        let area = guard.get_or_insert_with(Box::default);
        let parked = self.parked.get();
        let (replaced, new) = match who {
            Who::Task(key) if parked & FUTURE[d] == 0 => {
                let new = parked & TASK[d] == 0 || self.task[d].get() != Some(key);
                self.task[d].set(Some(key));
                self.parked.set(parked | TASK[d]);
                (area.latest.take(), new)
            }
            // Not a task, or a future holds the slot: the area keeps the waiter.
            _ => {
                if area.latest.as_ref().is_some_and(|w| who.is(w)) {
                    return false;
                }
                if parked & FUTURE[d] == 0 {
                    // It replaces the `poll_*` methods' task in the slot.
                    self.parked.set(parked & !TASK[d]);
                }
                (area.latest.replace(who.to_waiter()), true)
            }
        };
        self.mark_area(d, area);
        drop(guard);
        // Dropped outside the borrow: a waker's drop may be anyone's code.
        drop(replaced);
        new
    }

    fn mark_area(&self, d: usize, area: &Area) {
        let parked = self.parked.get() & !AREA[d];
        let busy = area.latest.is_some() || !area.queue.is_empty();
        self.parked
            .set(if busy { parked | AREA[d] } else { parked });
    }

    /// Gives the task slot in `dir` to the future at address `me`, of task `key`, if no
    /// task waits there. Returns whether it did.
    #[inline(always)]
    pub(crate) fn claim(&self, dir: Direction, key: Key, me: usize) -> bool {
        let d = dir as usize;
        let parked = self.parked.get();
        if parked & TASK[d] != 0 {
            return false;
        }
        self.task[d].set(Some(key));
        self.claim[d].set(me);
        self.parked.set(parked | TASK[d] | FUTURE[d]);
        true
    }

    /// The task the future at address `me` holds the task slot in `dir` for, if it
    /// holds it (it has not been woken since it took it).
    #[inline(always)]
    pub(crate) fn holder(&self, dir: Direction, me: usize) -> Option<Key> {
        let d = dir as usize;
        if self.parked.get() & FUTURE[d] == 0 || self.claim[d].get() != me {
            return None;
        }
        self.task[d].get()
    }

    /// The future at address `me` gives the task slot in `dir` back, if it holds it.
    #[inline(always)]
    pub(crate) fn release(&self, dir: Direction, me: usize) {
        if self.holder(dir, me).is_some() {
            let d = dir as usize;
            self.parked.set(self.parked.get() & !(TASK[d] | FUTURE[d]));
        }
    }

    /// Parks a future's waiter in `dir`: in its place if `ticket` still holds one (the
    /// waiter updated if it changed), in a new place otherwise. Returns whether it took
    /// a new place.
    pub(crate) fn park(&self, dir: Direction, who: Who<'_>, ticket: &mut Option<Ticket>) -> bool {
        let d = dir as usize;
        let mut guard = self.areas[d].borrow_mut();
        let area = guard.get_or_insert_with(Box::default);
        if let Some(mine) = *ticket {
            if let Some((_, waiter)) = area.queue.iter_mut().find(|(t, _)| *t == mine) {
                if who.is(waiter) {
                    return false;
                }
                let replaced = std::mem::replace(waiter, who.to_waiter());
                drop(guard);
                drop(replaced);
                return false;
            }
        }
        let mine = Ticket(area.next_ticket);
        area.next_ticket += 1;
        area.queue.push((mine, who.to_waiter()));
        *ticket = Some(mine);
        self.mark_area(d, area);
        true
    }

    /// Takes a future's place back (it is dropped, or done, before it was woken).
    pub(crate) fn unpark(&self, dir: Direction, ticket: Ticket) {
        let d = dir as usize;
        if self.parked.get() & AREA[d] == 0 {
            return;
        }
        let mut guard = self.areas[d].borrow_mut();
        let Some(area) = guard.as_mut() else { return };
        if let Some(at) = area.queue.iter().position(|(t, _)| *t == ticket) {
            let (_, waiter) = area.queue.swap_remove(at);
            self.mark_area(d, area);
            drop(guard);
            drop(waiter);
        }
    }

    /// How many wait, in both directions.
    fn waiters(&self) -> usize {
        let parked = self.parked.get();
        let mut n = 0;
        for (d, area) in self.areas.iter().enumerate() {
            n += usize::from(parked & TASK[d] != 0);
            if let Some(area) = &*area.borrow() {
                n += usize::from(area.latest.is_some()) + area.queue.len();
            }
        }
        n
    }

    /// Whether anyone waits in `dir`.
    pub(crate) fn is_parked(&self, dir: Direction) -> bool {
        let d = dir as usize;
        self.parked.get() & (TASK[d] | AREA[d]) != 0
    }

    /// Records what the OS reported (epoll's flags), and takes out the waiters it wakes.
    #[inline(always)]
    fn on_event(&self, bits: u32) -> Fired {
        self.readiness.set(self.readiness.get() | bits);
        let parked = self.parked.get();
        if parked == 0 {
            return Fired::Nobody;
        }
        // Who is woken: the waiters of each direction the event made ready.
        let mut who = 0;
        if bits & Direction::Read.ready_mask() != 0 {
            who |= parked & (TASK[0] | AREA[0] | FUTURE[0]);
        }
        if bits & Direction::Write.ready_mask() != 0 {
            who |= parked & (TASK[1] | AREA[1] | FUTURE[1]);
        }
        self.parked.set(parked & !who);
        // The hot case, a connection's task reading: one task in one slot.
        for (d, dir) in [(0, Direction::Read), (1, Direction::Write)] {
            if who & !(TASK[d] | FUTURE[d]) == 0 && who & TASK[d] != 0 {
                return match self.task[d].get() {
                    Some(key) => Fired::One((key, dir, self.fd)),
                    None => Fired::Nobody,
                };
            }
        }
        if who == 0 {
            return Fired::Nobody;
        }
        self.take_all(who)
    }

    /// Takes out the waiters in `who`: both slots, or any area's.
    #[cold]
    fn take_all(&self, who: u8) -> Fired {
        let mut task = [None, None];
        if who & TASK[0] != 0 {
            task[0] = self.task[0].get();
        }
        // One task waiting in both directions is reported once.
        if who & TASK[1] != 0 && self.task[1].get() != task[0] {
            task[1] = self.task[1].get();
        }
        let areas = if who & (AREA[0] | AREA[1]) != 0 {
            self.take_areas(who)
        } else {
            Vec::new()
        };
        Fired::Many(Box::new(Many {
            fd: self.fd,
            task,
            areas,
        }))
    }

    /// Empties the waiting areas of the directions in `who`.
    #[cold]
    fn take_areas(&self, who: u8) -> Vec<(Waiter, Direction)> {
        let mut taken = Vec::new();
        for (d, dir) in [(0, Direction::Read), (1, Direction::Write)] {
            if who & AREA[d] == 0 {
                continue;
            }
            let mut guard = self.areas[d].borrow_mut();
            let Some(area) = guard.as_mut() else { continue };
            let latest = area.latest.take();
            for waiter in latest
                .into_iter()
                .chain(area.queue.drain(..).map(|(_, w)| w))
            {
                taken.push((waiter, dir));
            }
        }
        taken
    }

    /// Forgets every waiter (the runtime is going away).
    fn clear_waiters(&self) {
        self.parked.set(0);
        for area in &self.areas {
            let taken = area.borrow_mut().take();
            drop(taken);
        }
    }
}

/// A task woken by a socket: its key, the direction, and the descriptor (for traces).
pub(crate) type Woke = (Key, Direction, i32);

/// What one event (or idle clock) woke on its socket, taken out while the reactor's
/// table was borrowed, to be reported once it is not.
enum Fired {
    Nobody,
    /// One task, in a task slot: a connection's handler, at nearly every event.
    One(Woke),
    Many(Box<Many>),
}

/// Both task slots' tasks, or waiters from the areas too.
struct Many {
    fd: i32,
    /// The tasks in the slots, read then write.
    task: [Option<Key>; 2],
    /// The waiters from the areas.
    areas: Vec<(Waiter, Direction)>,
}

/// Reports the tasks one event (or idle clock) woke, and wakes the other waiters.
#[inline(always)]
fn report(fired: Fired, woke: &mut impl FnMut(Woke)) {
    match fired {
        Fired::Nobody => {}
        Fired::One(task) => woke(task),
        Fired::Many(many) => report_many(*many, woke),
    }
}

#[cold]
fn report_many(many: Many, woke: &mut impl FnMut(Woke)) {
    if let Some(key) = many.task[0] {
        woke((key, Direction::Read, many.fd));
    }
    if let Some(key) = many.task[1] {
        woke((key, Direction::Write, many.fd));
    }
    wake_areas(many.areas, many.fd, woke);
}

/// Reports the tasks that waited in areas, and wakes the other waiters there (wakers
/// are anyone's code: this runs with no borrow held).
fn wake_areas(areas: Vec<(Waiter, Direction)>, fd: i32, woke: &mut impl FnMut(Woke)) {
    for (waiter, dir) in areas {
        match waiter {
            Waiter::Task(key) => woke((key, dir, fd)),
            Waiter::Waker(waker) => waiter::wake_foreign(waker),
            // Idle clocks wait for timers only.
            Waiter::Clock(_) => {}
        }
    }
}

/// The token under which the runtime's inbox interrupts the poll. Slab keys never reach
/// it, nor the alarm's: a key's index is at most `slab::LAST_INDEX`.
pub(crate) const INBOX: u64 = u64::MAX;

/// Events one wait takes at most: a busier poll leaves the rest to the next wait.
const EVENTS: usize = 1024;

/// What an OS poll found besides sockets.
#[derive(Default)]
pub(crate) struct Woken {
    /// Another thread woke a task: the inbox has work.
    pub(crate) inbox: bool,
    /// A timer may be due.
    pub(crate) timers: bool,
}

/// The run loop's buffer for what a wait reported, from [`Reactor::events`]; given back
/// to the reactor when dropped.
pub(crate) struct Events<'a> {
    reactor: &'a Reactor,
    buf: Vec<epoll::Event>,
}

impl Drop for Events<'_> {
    fn drop(&mut self) {
        self.buf.clear();
        self.reactor.events.set(std::mem::take(&mut self.buf));
    }
}

/// The OS poll, every registered socket, and the alarm for timers.
pub(crate) struct Reactor {
    epoll: OwnedFd,
    /// The buffer for a wait's events, with room for [`EVENTS`], while no run loop has
    /// it (see [`Events`]).
    events: Cell<Vec<epoll::Event>>,
    sources: RefCell<Slab<Rc<Source>>>,
    /// Made when the first timer is set, so that a runtime without timers holds no
    /// timerfd (and runs under Miri, which has none). `None` inside where the OS refuses
    /// one: timers are then kept by the poll's own timeout, to the millisecond.
    alarm: OnceCell<Option<Alarm>>,
}

impl Reactor {
    pub(crate) fn new() -> io::Result<Self> {
        Ok(Reactor {
            epoll: epoll::create(epoll::CreateFlags::CLOEXEC)?,
            events: Cell::new(Vec::new()),
            sources: RefCell::new(Slab::new()),
            alarm: OnceCell::new(),
        })
    }

    /// The buffer for the run loop's waits, until it is dropped: the run loop holds it,
    /// not the reactor, so that no borrow is checked at every wait. There is one run
    /// loop per runtime at a time (`block_on` does not nest), and the buffer is kept
    /// between them.
    pub(crate) fn events(&self) -> Events<'_> {
        let mut buf = self.events.take();
        buf.reserve(EVENTS);
        Events { reactor: self, buf }
    }

    fn alarm(&self) -> Option<&Alarm> {
        self.alarm
            .get_or_init(|| Alarm::new(self.epoll.as_fd()).ok())
            .as_ref()
    }

    pub(crate) fn inbox_waker(&self) -> io::Result<OwnedFd> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &self.epoll,
            &fd,
            EventData::new_u64(INBOX),
            EventFlags::IN | EventFlags::ET,
        )?;
        Ok(fd)
    }

    /// Registers `io` once, for both directions, edge-triggered.
    pub(crate) fn register(&self, io: BorrowedFd<'_>, fd: i32) -> io::Result<(Key, Rc<Source>)> {
        let source = Rc::new(Source {
            fd,
            ..Source::default()
        });
        let key = self
            .sources
            .borrow_mut()
            .insert_with(|_| Rc::clone(&source));
        // PRI: urgent data, which a short read must not be taken past (`read_short`).
        let flags =
            EventFlags::IN | EventFlags::PRI | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        let data = EventData::new_u64(key.to_token() as u64);
        let registered = match epoll::add(&self.epoll, io, data, flags) {
            // This number once held a duplicate of the same socket, closed since: epoll
            // keeps a socket until its last descriptor closes (see `forget`). The entry
            // is this one's now.
            Err(Errno::EXIST) => epoll::modify(&self.epoll, io, data, flags),
            registered => registered,
        };
        match registered {
            Ok(()) => Ok((key, source)),
            Err(e) => {
                self.sources.borrow_mut().remove(key);
                Err(e.into())
            }
        }
    }

    /// Forgets a source. Closing its socket is what takes it out of the OS poll: no
    /// system call is spent on `EPOLL_CTL_DEL` for a socket that is about to be closed.
    /// (Unless the descriptor was duplicated: epoll keeps a socket until its last
    /// descriptor closes. The entry's events then come under a key that finds nothing,
    /// and a duplicate registered later under the same number takes the entry over.)
    ///
    /// Whoever still waits on the socket is reported to `woke` (or woken), as by a
    /// hang-up: a `poll_*` caller may wait on a socket it holds no reference to, and
    /// must find it gone rather than wait for good.
    pub(crate) fn forget(&self, key: Key, mut woke: impl FnMut(Woke)) {
        let source = self.sources.borrow_mut().remove(key);
        if let Some(source) = source {
            let fired = source.on_event(HUP);
            drop(source);
            report(fired, &mut woke);
        }
    }

    /// Takes `io` out of the OS poll, for a socket that leaves the runtime without being
    /// closed (`into_std`); its source is forgotten as usual afterwards.
    pub(crate) fn deregister(&self, io: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(&self.epoll, io)?;
        Ok(())
    }

    /// Number of registered sockets.
    pub(crate) fn len(&self) -> usize {
        self.sources.borrow().len()
    }

    /// Sockets with a waiter to read, to write, and all waiters, counted by walking
    /// every socket: kept off the per-message path, paid by whoever asks (a stats
    /// scrape).
    pub(crate) fn parked(&self) -> (usize, usize, usize) {
        let sources = self.sources.borrow();
        sources
            .iter()
            .fold((0, 0, 0), |(read, write, all), source| {
                (
                    read + usize::from(source.is_parked(Direction::Read)),
                    write + usize::from(source.is_parked(Direction::Write)),
                    all + source.waiters(),
                )
            })
    }

    /// Waits for the OS until a socket turns ready, another thread wakes a task, or a
    /// timer is due; with `at_once`, does not wait at all. `deadline` is the earliest
    /// timer's when it may have moved since the last poll: the alarm is set for it, and
    /// keeps it from then on. (Without an alarm the poll waits no longer than it, and
    /// says `timers`, so that the caller gives it again.) What the OS reported waits for
    /// [`dispatch`](Self::dispatch).
    pub(crate) fn wait(
        &self,
        events: &mut Events<'_>,
        at_once: bool,
        deadline: Option<Instant>,
    ) -> io::Result<Woken> {
        let mut woken = Woken::default();
        let mut timeout = if at_once { Some(Duration::ZERO) } else { None };
        // With the alarm set in time there is nothing to compute: when a timer is due,
        // the alarm says so. Only a new, earlier deadline costs a clock read.
        let covered = |d| self.alarm().is_some_and(|alarm| alarm.covers(d));
        if let Some(deadline) = deadline.filter(|&d| !covered(d)) {
            let now = Instant::now();
            if deadline <= now {
                timeout = Some(Duration::ZERO);
                woken.timers = true;
            } else if self
                .alarm()
                .is_none_or(|alarm| alarm.set(deadline, now).is_err())
            {
                // No alarm: wait in the poll itself, to the millisecond.
                timeout = Some(timeout.unwrap_or(deadline - now));
                woken.timers = true;
            }
        }
        let timeout = timeout.map(|d| Timespec {
            tv_sec: d.as_secs().try_into().unwrap_or(i64::MAX),
            tv_nsec: d.subsec_nanos().into(),
        });
        let events = &mut events.buf;
        // Cleared first: after an interrupted wait there is nothing to dispatch, and no
        // earlier batch may be seen twice.
        events.clear();
        match epoll::wait(&self.epoll, spare_capacity(events), timeout.as_ref()) {
            Ok(_) => Ok(woken),
            Err(Errno::INTR) => Ok(woken),
            Err(e) => Err(e.into()),
        }
    }

    /// Goes through what the last [`wait`](Self::wait) reported: records each socket's
    /// readiness, reports each task parked there to `woke` (the reactor schedules
    /// nothing), wakes the other waiters, and adds to `woken` what else needs doing.
    ///
    /// `woke` is called with no borrow of the reactor held, so it may run the task at
    /// once: the task may register sockets, drop them, even wait on the one that woke
    /// it. It must not call `wait` or `dispatch` (only the run loop does, and a task
    /// cannot re-enter it).
    #[inline(always)]
    pub(crate) fn dispatch(
        &self,
        events: &Events<'_>,
        woken: &mut Woken,
        mut woke: impl FnMut(Woke),
    ) {
        for event in &events.buf {
            // Copied out: the kernel's layout packs an event's fields.
            let (flags, data) = (event.flags, event.data);
            let fired = match data.u64() {
                INBOX => {
                    woken.inbox = true;
                    continue;
                }
                ALARM => {
                    if let Some(alarm) = self.alarm() {
                        alarm.rang();
                    }
                    woken.timers = true;
                    continue;
                }
                token => match self.sources.borrow().get(Key::from_token(token as usize)) {
                    Some(source) => source.on_event(flags.bits()),
                    None => continue,
                },
            };
            report(fired, &mut woke);
        }
    }

    /// The idle clock of socket `key` looks (see [`Idle`]); if that makes the socket
    /// idle, reports its waiters to `woke` as [`dispatch`](Self::dispatch) does.
    pub(crate) fn idle_tick(
        &self,
        key: Key,
        rearm: impl FnOnce(Duration) -> (Instant, Key),
        mut woke: impl FnMut(Woke),
    ) {
        // Cloned out: the waiters are reported with no borrow held.
        let Some(source) = self.sources.borrow().get(key).cloned() else {
            return;
        };
        report(source.idle_tick(rearm), &mut woke);
    }

    /// Forgets every socket's waiters (the runtime is going away). The sockets stay
    /// registered for as long as they live.
    pub(crate) fn clear_waiters(&self) {
        let sources: Vec<Rc<Source>> = self.sources.borrow().iter().cloned().collect();
        for source in sources {
            source.clear_waiters();
        }
    }
}
