//! A socket's place in its runtime's reactor, and the two ways to wait there.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::marker::PhantomPinned;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::ptr;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use crate::context::{self, Core};
use crate::reactor::{Direction, Source, Ticket};
use crate::slab::Key;
use crate::trace::{self, Area, Event};
use crate::waiter::Who;

/// A socket's place in the reactor of the runtime that created it, held by the socket
/// for as long as it lives.
pub(crate) struct Registration {
    key: Key,
    source: Rc<Source>,
    core: Rc<Core>,
}

impl Registration {
    /// Registers `io` with the current runtime's reactor.
    pub(crate) fn new(io: BorrowedFd<'_>, fd: i32) -> io::Result<Self> {
        let core = context::with_core(Rc::clone).ok_or_else(|| {
            io::Error::other("coop sockets must be created inside a coop runtime (in block_on)")
        })?;
        let (key, source) = core.reactor.register(io, fd)?;
        Ok(Registration { key, source, core })
    }

    #[inline]
    pub(crate) fn clear(&self, dir: Direction) {
        self.source.clear(dir);
    }

    /// A read returned less than it asked for: see [`Source::read_short`].
    #[inline]
    pub(crate) fn read_short(&self) {
        self.source.read_short();
    }

    /// Notes progress for the idle clock.
    #[inline]
    pub(crate) fn heard(&self) {
        self.source.heard();
    }

    /// Starts, restarts or stops the idle clock (see [`TcpStream::set_idle_timeout`]).
    ///
    /// [`TcpStream::set_idle_timeout`]: crate::net::TcpStream::set_idle_timeout
    pub(crate) fn set_idle_timeout(&self, timeout: Option<Duration>) {
        self.stop_idle();
        if let Some(timeout) = timeout {
            // Never zero: a clock that fires at once would fire forever in one poll.
            let quarter = (timeout / 4).max(Duration::from_millis(1));
            // The clock, not the runtime's time as of its last poll: a clock started
            // late in a long round must not ring early.
            let deadline = Instant::now() + quarter;
            let timer = self.core.timers.insert_clock(deadline, self.key);
            self.source.start_idle(quarter, (deadline, timer));
        }
    }

    fn stop_idle(&self) {
        if let Some((deadline, timer)) = self.source.stop_idle() {
            self.core.timers.remove(deadline, timer);
        }
    }

    #[inline]
    pub(crate) fn try_io<R>(
        &self,
        dir: Direction,
        op: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        self.source.try_io(dir, op)
    }

    /// `Ready` if the socket may be ready in `dir` (spending fairness budget); otherwise
    /// parks the caller as the one `poll_*` waiter of `dir`.
    #[inline(always)]
    pub(crate) fn poll_ready(&self, dir: Direction, cx: &mut Context<'_>) -> Poll<()> {
        if self.source.is_ready(dir) {
            return context::poll_spend(cx);
        }
        let who = context::who(cx, &self.core);
        if self.source.park_latest(dir, who) {
            self.trace_park(dir);
        }
        Poll::Pending
    }

    /// Waits until the socket may be ready in `dir`, in a place of its own.
    pub(crate) fn ready(&self, dir: Direction) -> Ready<'_> {
        Ready {
            registration: self,
            dir,
            place: Cell::new(Place::None),
            _pinned: PhantomPinned,
        }
    }

    /// Tries `op`, waiting until the socket is ready whenever it would block.
    pub(crate) async fn io<R>(
        &self,
        dir: Direction,
        mut op: impl FnMut() -> io::Result<R>,
    ) -> io::Result<R> {
        loop {
            self.ready(dir).await;
            match self.try_io(dir, &mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return result,
            }
        }
    }

    /// The poll of [`io`](Self::io), for the `poll_*` methods: tries `op` whenever the
    /// socket may be ready; parks the caller as the one `poll_*` waiter when it is not.
    pub(crate) fn poll_io<R>(
        &self,
        dir: Direction,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            ready!(self.poll_ready(dir, cx));
            match self.try_io(dir, &mut op) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                result => return Poll::Ready(result),
            }
        }
    }

    #[inline(always)]
    fn trace_park(&self, dir: Direction) {
        if trace::enabled() {
            self.trace_park_slow(dir);
        }
    }

    #[cold]
    fn trace_park_slow(&self, dir: Direction) {
        if let Some(task) = context::current_id() {
            trace::emit(|| Event::Park {
                task,
                area: match dir {
                    Direction::Read => Area::Read,
                    Direction::Write => Area::Write,
                },
                fd: self.source.fd(),
            });
        }
    }
}

impl Registration {
    /// Leaves the runtime with the socket `io` still open: out of the OS poll, then
    /// forgotten as by a drop (whoever waits on it is woken).
    pub(crate) fn deregister(self, io: BorrowedFd<'_>) -> io::Result<()> {
        let left = self.core.reactor.deregister(io);
        drop(self);
        left
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop_idle();
        let core = &self.core;
        core.reactor.forget(self.key, |(key, _, _)| core.wake(key));
    }
}

/// Waits until a socket may be ready in one direction. Any number of these may wait on
/// one socket at once; dropped before it is woken, it takes its place back.
///
/// The first task to wait in a direction takes the socket's task slot, as the `poll_*`
/// methods do (a few stores, no allocation, no borrow); whoever comes while it is taken
/// waits in the socket's area, by ticket. The slot knows its future by address, which
/// `PhantomPinned` keeps fixed from the first poll to the drop.
pub(crate) struct Ready<'a> {
    registration: &'a Registration,
    dir: Direction,
    place: Cell<Place>,
    _pinned: PhantomPinned,
}

/// Where a [`Ready`] waits.
#[derive(Clone, Copy)]
enum Place {
    None,
    /// In the task slot, unless woken since.
    Slot,
    Area(Ticket),
}

impl Ready<'_> {
    /// Gives its place back, wherever it is. The slot is the common case (a task's one
    /// future there), and costs a comparison, inline.
    #[inline(always)]
    fn leave(&self, me: usize) {
        match self.place.get() {
            Place::None => {}
            Place::Slot => {
                self.place.set(Place::None);
                self.registration.source.release(self.dir, me);
            }
            Place::Area(ticket) => self.leave_area(ticket),
        }
    }

    #[cold]
    fn leave_area(&self, ticket: Ticket) {
        self.place.set(Place::None);
        self.registration.source.unpark(self.dir, ticket);
    }

    /// Not ready: takes or keeps a place. Out of line, so that the ready case, the one
    /// every operation goes through, stays small enough to inline.
    #[inline(never)]
    fn wait(&self, me: usize, cx: &mut Context<'_>) -> Poll<()> {
        let source = &self.registration.source;
        let who = context::who(cx, &self.registration.core);
        if let Place::Slot = self.place.get() {
            match who {
                Who::Task(key) if source.holder(self.dir, me) == Some(key) => {
                    return Poll::Pending;
                }
                // Woken since, or polled by someone else now: it waits anew.
                _ => self.leave(me),
            }
        }
        let new = match (self.place.get(), who) {
            (Place::None, Who::Task(key)) if source.claim(self.dir, key, me) => {
                self.place.set(Place::Slot);
                true
            }
            (place, who) => {
                let mut ticket = match place {
                    Place::Area(ticket) => Some(ticket),
                    _ => None,
                };
                let new = source.park(self.dir, who, &mut ticket);
                if let Some(ticket) = ticket {
                    self.place.set(Place::Area(ticket));
                }
                new
            }
        };
        if new {
            self.registration.trace_park(self.dir);
        }
        Poll::Pending
    }
}

impl Future for Ready<'_> {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &*self;
        let me = ptr::from_ref(this).addr();
        if this.registration.source.is_ready(this.dir) {
            ready!(context::poll_spend(cx));
            this.leave(me);
            return Poll::Ready(());
        }
        this.wait(me, cx)
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        let me = ptr::from_ref(&*self).addr();
        self.leave(me);
    }
}
