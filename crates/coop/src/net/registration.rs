//! A socket's place in its runtime's reactor, and the two ways to wait there.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};

use crate::context::{self, Core};
use crate::reactor::{Direction, Source, Ticket};
use crate::slab::Key;
use crate::trace::{self, Area, Event};

/// A socket's place in the reactor of the runtime that created it, held by the socket
/// for as long as it lives.
pub(crate) struct Registration {
    key: Key,
    source: Rc<Source>,
    core: Rc<Core>,
}

impl Registration {
    /// Registers `io` with the current runtime's reactor.
    pub(crate) fn new(io: &mut impl mio::event::Source, fd: i32) -> io::Result<Self> {
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
            ticket: None,
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

    #[inline(always)]
    fn trace_park(&self, dir: Direction) {
        if trace::enabled() {
            self.trace_park_slow(dir);
        }
    }

    #[cold]
    fn trace_park_slow(&self, dir: Direction) {
        {
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
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.core.reactor.forget(self.key);
    }
}

/// Waits until a socket may be ready in one direction. Any number of these may wait on
/// one socket at once; dropped before it is woken, it takes its place back.
pub(crate) struct Ready<'a> {
    registration: &'a Registration,
    dir: Direction,
    ticket: Option<Ticket>,
}

impl Future for Ready<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let source = &this.registration.source;
        if source.is_ready(this.dir) {
            ready!(context::poll_spend(cx));
            if let Some(ticket) = this.ticket.take() {
                source.unpark(this.dir, ticket);
            }
            return Poll::Ready(());
        }
        let who = context::who(cx, &this.registration.core);
        if source.park(this.dir, who, &mut this.ticket) {
            this.registration.trace_park(this.dir);
        }
        Poll::Pending
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.registration.source.unpark(self.dir, ticket);
        }
    }
}
