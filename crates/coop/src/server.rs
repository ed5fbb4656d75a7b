//! `tcp_server(address, handler)`: the seed's accept loop, made to survive and to stop.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use pin_project_lite::pin_project;

use crate::net::{TcpListener, TcpStream};
use crate::slab::{Key, Slab};
use crate::task::panic_message;
use crate::time::{Sleep, sleep};
use crate::{spawn, spawn_named, trace};

/// How long the accept loop rests after an error that says the process or the system is
/// out of something (file descriptors, buffers, memory). Freed resources are picked up
/// within this time; the loop never spins on the error.
const BACKOFF: Duration = Duration::from_millis(100);

/// An accept error that comes and goes (fds freed, taken again) is logged at most this
/// often.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Binds `addr` and serves it forever, starting `handler(stream, peer)` as a task for
/// every client: the seed's `tcp_server`.
///
/// Fails only if it cannot bind (the port is taken, or not permitted). See [`Server`]
/// for what it does with errors after that, and for a server that can be stopped.
///
/// # Examples
///
/// The seed's echo server:
///
/// ```no_run
/// use std::net::SocketAddr;
/// use coop::net::TcpStream;
///
/// async fn echo_handler(client: TcpStream, address: SocketAddr) {
///     println!("Connection from {address}");
///     let mut data = [0; 1000];
///     while let Ok(n @ 1..) = client.read(&mut data).await {
///         let reply = [b"GOT:", &data[..n]].concat();
///         if client.write_all(&reply).await.is_err() {
///             break;
///         }
///     }
///     println!("Connection closed");
/// }
///
/// coop::block_on(coop::tcp_server("0.0.0.0:25000", echo_handler)).unwrap();
/// ```
pub async fn tcp_server<A, H, F>(addr: A, handler: H) -> io::Result<()>
where
    A: ToSocketAddrs,
    H: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + 'static,
{
    serve(TcpListener::bind(addr)?, handler).await;
    Ok(())
}

/// Accepts clients on `listener` forever, starting `handler(stream, peer)` as a detached
/// task for each: [`Server::serve`] with no limit and no stop.
pub async fn serve<H, F>(listener: TcpListener, handler: H)
where
    H: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + 'static,
{
    Server::new(listener).serve(handler).await;
}

/// An accept loop with what a service needs around it: a limit on open connections, a
/// way to stop accepting, and a way to know when every connection has finished.
///
/// No accept error ends it:
///
/// * an error that belongs to one connection (it was reset or aborted while queued, a
///   network error `accept` passes on, an interrupted call) is skipped, and the next
///   client accepted at once;
/// * any other error (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`: a limit is reached) is
///   logged (at most once a minute), and the loop rests 100 ms between tries until it
///   clears. The clients already connected are served meanwhile.
///
/// None of this costs anything per message: a connection is counted when it is accepted
/// and when its handler returns.
///
/// # Examples
///
/// ```
/// use coop::Server;
/// use coop::net::{TcpListener, TcpStream};
///
/// coop::block_on(async {
///     let server = Server::new(TcpListener::bind("127.0.0.1:0")?).max_connections(100);
///     let addr = server.local_addr()?;
///     let handle = server.handle();
///     let serving = coop::spawn(server.serve(|stream, _peer| async move {
///         let mut buf = [0; 64];
///         while let Ok(n @ 1..) = stream.read(&mut buf).await {
///             let _ = stream.write_all(&buf[..n]).await;
///         }
///     }));
///
///     let client = TcpStream::connect(addr).await?;
///     client.write_all(b"ping").await?;
///     let mut reply = [0; 4];
///     client.read(&mut reply).await?;
///     assert_eq!(&reply, b"ping");
///
///     handle.stop(); // no new connections; the port is released
///     serving.await;
///     drop(client); // the last connection ends...
///     handle.drained().await; // ...and with it every handler
///     std::io::Result::Ok(())
/// })
/// .unwrap();
/// ```
pub struct Server {
    listener: TcpListener,
    max_connections: usize,
    shared: Option<SharedLimit>,
    control: Rc<Control>,
}

/// Controls a [`Server`] from other tasks. Cloning it gives another handle to the same
/// server.
#[derive(Clone)]
pub struct ServerHandle {
    control: Rc<Control>,
}

#[derive(Default)]
struct Control {
    stopped: Cell<bool>,
    open: Cell<usize>,
    total: Cell<u64>,
    /// The accept loop, while it waits for a client, for room under the limit, or out a
    /// back-off: woken by `stop` and when a connection ends.
    acceptor: Cell<Option<Waker>>,
    /// Tasks waiting for the last connection to end.
    drained: RefCell<Vec<Waker>>,
    /// Handlers waiting for `stop` (to end a keep-alive connection gracefully), by key:
    /// each of thousands of connections parks and leaves in O(1).
    stopping: RefCell<Slab<Waker>>,
}

impl Server {
    /// A server for `listener`, with no connection limit.
    pub fn new(listener: TcpListener) -> Server {
        Server {
            listener,
            max_connections: usize::MAX,
            shared: None,
            control: Rc::default(),
        }
    }

    /// Accepts at most `max` connections at a time. Beyond it, new clients wait in the
    /// kernel's listen queue (their connect succeeds, their first reply waits) until a
    /// connection ends. At least 1.
    pub fn max_connections(mut self, max: usize) -> Server {
        self.max_connections = max.max(1);
        self
    }

    /// Counts its connections against `limit` too, which servers on other threads share:
    /// a connection is accepted only while the total open across them is under it. A
    /// client beyond it waits in its listener's queue until a connection ends anywhere.
    ///
    /// The total costs two atomic operations per connection (at accept and at the end),
    /// two more each time the accept loop wakes to find no client after all, and nothing
    /// per message. A connection's end wakes every accept loop waiting for a place, on
    /// every thread: at the limit, each end costs a wake-up per thread.
    pub fn shared_limit(mut self, limit: SharedLimit) -> Server {
        self.shared = Some(limit);
        self
    }

    /// A handle to stop the server and follow its connections.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            control: Rc::clone(&self.control),
        }
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts clients, starting `handler(stream, peer)` as a detached task for each,
    /// until [`ServerHandle::stop`]; then closes the listener and returns (the handlers
    /// run on).
    ///
    /// A handler that panics, in its future or in the call that makes it, ends its own
    /// connection (logged at error, with the peer's address); the server goes on.
    pub async fn serve<H, F>(self, mut handler: H)
    where
        H: FnMut(TcpStream, SocketAddr) -> F,
        F: Future<Output = ()> + 'static,
    {
        self.serve_either(move |stream, peer| Handler::Inline(handler(stream, peer)))
            .await
    }

    /// [`serve`](Self::serve), for a handler that answers a rare kind of connection with
    /// a future of another type ([`Handler::Boxed`]): that connection's task is a task of
    /// its own type, holding the box, so that the common kind's task (`F`) is neither
    /// sized nor slowed by it (no test of which kind on each poll). Both kinds count
    /// alike: the limit, [`ServerHandle::drained`], a panic ending only its connection.
    pub async fn serve_either<H, F>(self, mut handler: H)
    where
        H: FnMut(TcpStream, SocketAddr) -> Handler<F>,
        F: Future<Output = ()> + 'static,
    {
        let Server {
            listener,
            max_connections,
            shared,
            control,
        } = self;
        let mut backoff: Option<Sleep> = None;
        let mut last_warning: Option<Instant> = None;
        loop {
            let accepted = std::future::poll_fn(|cx| {
                if control.stopped.get() {
                    return Poll::Ready(None);
                }
                control.acceptor.set(Some(cx.waker().clone()));
                if let Some(rest) = &mut backoff {
                    if Pin::new(rest).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                if control.open.get() >= max_connections {
                    return Poll::Pending;
                }
                // A place under the shared limit is taken before the client: taken after,
                // two threads could both take the last one.
                if shared.as_ref().is_some_and(|limit| !limit.try_take(cx)) {
                    return Poll::Pending;
                }
                let accepted = listener.poll_accept(cx);
                if !matches!(accepted, Poll::Ready(Ok(_))) {
                    if let Some(limit) = &shared {
                        limit.give_back();
                    }
                }
                accepted.map(Some)
            })
            .await;
            match accepted {
                None => return,
                Some(Ok((stream, peer))) => {
                    if backoff.take().is_some() {
                        tracing::debug!("accepting connections again");
                    }
                    let connection = Connection::open(&control, shared.clone());
                    // The handler gets the address as the OS gives it; the log names an
                    // IPv4 client of a dual-stack listener as IPv4, not `::ffff:a.b.c.d`.
                    let shown = SocketAddr::new(peer.ip().to_canonical(), peer.port());
                    // A panic in the handler's own call (before its future exists) is
                    // that connection's, as a panic in its future is: the stream and the
                    // count go, the loop goes on.
                    let future = match catch_unwind(AssertUnwindSafe(|| handler(stream, peer))) {
                        Ok(future) => future,
                        Err(payload) => {
                            let message = panic_message(payload.as_ref()).unwrap_or("...");
                            tracing::error!(
                                "Connection {shown}: the handler panicked: {message}; the server goes on"
                            );
                            continue;
                        }
                    };
                    match future {
                        Handler::Inline(future) => start(future, shown, connection),
                        Handler::Boxed(future) => start(future, shown, connection),
                    }
                }
                Some(Err(e)) if is_connection_error(&e) => {}
                Some(Err(e)) => {
                    let now = crate::time::now();
                    if last_warning.is_none_or(|at| now - at >= WARN_EVERY) {
                        tracing::warn!(
                            "cannot accept connections: {e}; retrying every {} ms until it clears",
                            BACKOFF.as_millis()
                        );
                        last_warning = Some(now);
                    }
                    backoff = Some(sleep(BACKOFF));
                }
            }
        }
    }
}

/// What a handler of [`Server::serve_either`] gives for one connection.
pub enum Handler<F> {
    /// The common kind: its task holds `F` itself.
    Inline(F),
    /// A rare kind: a task of another type holds it, boxed.
    Boxed(Pin<Box<dyn Future<Output = ()>>>),
}

impl<F> fmt::Debug for Handler<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Handler::Inline(_) => "Handler::Inline",
            Handler::Boxed(_) => "Handler::Boxed",
        })
    }
}

/// Starts a connection's task: `future`, counted as `connection` until it ends.
fn start<F: Future<Output = ()> + 'static>(future: F, peer: SocketAddr, connection: Connection) {
    let counted = Counted {
        future,
        peer,
        connection: Some(connection),
    };
    if trace::enabled() {
        drop(spawn_named(&format!("conn {peer}"), counted));
    } else {
        drop(spawn(counted));
    }
}

impl ServerHandle {
    /// Stops accepting: the server's `serve` returns and its listener closes, so the port
    /// refuses new clients at once. Open connections are not touched.
    pub fn stop(&self) {
        self.control.stopped.set(true);
        if let Some(acceptor) = self.control.acceptor.take() {
            acceptor.wake();
        }
        // Taken out before any is woken: a waker may drop its `Stopped` at once.
        let waiting: Vec<Waker> = self.control.stopping.borrow_mut().drain().collect();
        waiting.into_iter().for_each(Waker::wake);
    }

    /// Completes once [`stop`](Self::stop) is called (at once if it was): what a
    /// handler of a long-lived connection waits on beside its client, to end gracefully
    /// (an HTTP server's last response says `Connection: close`, HTTP/2 sends GOAWAY).
    ///
    /// Cancel safe: dropping it forgets its waker. Each waiting future costs one slot,
    /// taken and freed in constant time.
    ///
    /// # Examples
    ///
    /// ```
    /// use coop::{Server, TcpListener};
    ///
    /// coop::block_on(async {
    ///     let server = Server::new(TcpListener::bind("127.0.0.1:0")?);
    ///     let handle = server.handle();
    ///     let waiting = coop::spawn({
    ///         let handle = handle.clone();
    ///         async move { handle.stopped().await }
    ///     });
    ///     handle.stop();
    ///     waiting.await?;
    ///     std::io::Result::Ok(())
    /// })
    /// .unwrap();
    /// ```
    pub fn stopped(&self) -> Stopped {
        Stopped {
            control: Rc::clone(&self.control),
            key: None,
        }
    }

    /// Whether [`stop`](Self::stop) was called: from then on the server accepts no one
    /// (what a health check reports to a load balancer, so that it sends no more clients).
    pub fn is_stopped(&self) -> bool {
        self.control.stopped.get()
    }

    /// Connections whose handler is still running.
    pub fn open_connections(&self) -> usize {
        self.control.open.get()
    }

    /// Connections accepted so far.
    pub fn total_connections(&self) -> u64 {
        self.control.total.get()
    }

    /// Waits until no connection is open (after [`stop`](Self::stop): until every
    /// handler has returned).
    pub async fn drained(&self) {
        std::future::poll_fn(|cx| {
            if self.control.open.get() == 0 {
                return Poll::Ready(());
            }
            let mut waiting = self.control.drained.borrow_mut();
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }
}

/// The future of [`ServerHandle::stopped`].
#[must_use = "futures do nothing unless polled"]
pub struct Stopped {
    control: Rc<Control>,
    /// Its slot among the waiters, once it waits.
    key: Option<Key>,
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.control.stopped.get() {
            // `stop` emptied the slots: ours is gone (and may be another's by now).
            this.key = None;
            return Poll::Ready(());
        }
        let mut waiting = this.control.stopping.borrow_mut();
        match this.key.and_then(|key| waiting.get_mut(key)) {
            Some(waker) => waker.clone_from(cx.waker()),
            None => this.key = Some(waiting.insert_with(|_| cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            if !self.control.stopped.get() {
                self.control.stopping.borrow_mut().remove(key);
            }
        }
    }
}

impl fmt::Debug for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stopped")
            .field("stopped", &self.control.stopped.get())
            .finish()
    }
}

pin_project! {
    /// A handler's future, counted as an open connection until it returns (or panics,
    /// or is dropped). (A struct, not an `async` block, which would store the handler's
    /// future twice.)
    struct Counted<F> {
        #[pin]
        future: F,
        peer: SocketAddr,
        connection: Option<Connection>,
    }
    impl<F> PinnedDrop for Counted<F> {
        fn drop(this: Pin<&mut Self>) {
            Counted::dropped(this);
        }
    }
}

impl<F: Future<Output = ()>> Future for Counted<F> {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        ready!(this.future.poll(cx));
        // Counted out now: the task's future goes next, but the count must not wait.
        this.connection.take();
        Poll::Ready(())
    }
}

impl<F> Counted<F> {
    fn dropped(this: Pin<&mut Self>) {
        // Dropped before the handler returned: it panicked (the runtime caught it and
        // is dropping its future), or it was cancelled.
        if this.connection.is_some() {
            if let Some(message) = crate::context::task_panic() {
                tracing::error!(
                    "Connection {}: the handler panicked: {message}; the server goes on",
                    this.peer
                );
            }
        }
    }
}

/// One open connection, counted from accept until its handler returns (or is dropped
/// with the runtime).
struct Connection {
    control: Rc<Control>,
    /// The shared limit whose place the connection holds.
    shared: Option<SharedLimit>,
}

impl Connection {
    fn open(control: &Rc<Control>, shared: Option<SharedLimit>) -> Connection {
        control.open.set(control.open.get() + 1);
        control.total.set(control.total.get() + 1);
        Connection {
            control: Rc::clone(control),
            shared,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(limit) = &self.shared {
            limit.give_back();
        }
        let control = &self.control;
        control.open.set(control.open.get() - 1);
        if let Some(acceptor) = control.acceptor.take() {
            acceptor.wake();
        }
        if control.open.get() == 0 {
            let waiting = std::mem::take(&mut *control.drained.borrow_mut());
            waiting.into_iter().for_each(Waker::wake);
        }
    }
}

/// A limit on the connections open at once across several [`Server`]s, one per thread
/// ([`Server::shared_limit`]). Cloning it gives another handle to the same limit.
///
/// # Examples
///
/// ```
/// let limit = coop::SharedLimit::new(100);
/// let threads = coop::threads::Builder::new().spawn((0..2).map(|_| {
///     let limit = limit.clone();
///     move || async move {
///         let listener = coop::TcpListener::bind("127.0.0.1:0")?;
///         let server = coop::Server::new(listener).shared_limit(limit);
///         let handle = server.handle();
///         let serving = coop::spawn(server.serve(|_stream, _peer| async {}));
///         coop::stop_requested().await;
///         handle.stop();
///         serving.await?;
///         std::io::Result::Ok(())
///     }
/// }))?;
/// threads.stop();
/// for outcome in threads.join() {
///     outcome.unwrap()?;
/// }
/// assert_eq!(limit.open(), 0);
/// # std::io::Result::Ok(())
/// ```
#[derive(Clone)]
pub struct SharedLimit {
    inner: Arc<Limit>,
}

struct Limit {
    max: usize,
    open: AtomicUsize,
    /// Acceptors that found no place, on any thread: woken when a place frees.
    waiting: Mutex<Vec<Waker>>,
    /// `waiting` may be non-empty: a connection's end looks at it without locking.
    anyone_waiting: AtomicBool,
}

impl SharedLimit {
    /// Room for `max` connections at once (at least 1).
    pub fn new(max: usize) -> SharedLimit {
        SharedLimit {
            inner: Arc::new(Limit {
                max: max.max(1),
                open: AtomicUsize::new(0),
                waiting: Mutex::new(Vec::new()),
                anyone_waiting: AtomicBool::new(false),
            }),
        }
    }

    /// Connections open under the limit now, across every server that shares it.
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::SeqCst)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.inner.max
    }

    /// Takes a place if there is one; else `cx`'s task is woken when one frees.
    fn try_take(&self, cx: &Context<'_>) -> bool {
        let limit = &*self.inner;
        if limit.take() {
            return true;
        }
        {
            let mut waiting = limit.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if !waiting.iter().any(|w| w.will_wake(cx.waker())) {
                waiting.push(cx.waker().clone());
            }
            limit.anyone_waiting.store(true, Ordering::SeqCst);
        }
        // A place freed between the first try and the flag's store was given back by
        // someone who saw no flag: look again. (Both sides store, then load, in SeqCst:
        // at least one of them sees the other.)
        limit.take()
    }

    /// Gives a place back and wakes whoever waits for one.
    fn give_back(&self) {
        let limit = &*self.inner;
        limit.open.fetch_sub(1, Ordering::SeqCst);
        if limit.anyone_waiting.load(Ordering::SeqCst) {
            let waiting = {
                let mut waiting = limit.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                limit.anyone_waiting.store(false, Ordering::SeqCst);
                std::mem::take(&mut *waiting)
            };
            // Woken with no lock held: the wakers are anyone's.
            waiting.into_iter().for_each(Waker::wake);
        }
    }
}

impl Limit {
    fn take(&self) -> bool {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok()
    }
}

impl fmt::Debug for SharedLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLimit")
            .field("max", &self.inner.max)
            .field("open", &self.open())
            .finish()
    }
}

/// Errors of one queued connection, not of the listener: `accept(2)` says Linux passes
/// pending network errors of the new socket on as errors of `accept`, to be retried.
fn is_connection_error(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    use rustix::io::Errno;
    let retry = [
        Errno::PROTO,
        Errno::PERM,
        Errno::NOPROTOOPT,
        Errno::HOSTDOWN,
        Errno::NONET,
        Errno::OPNOTSUPP,
    ];
    matches!(
        e.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | NetworkDown
            | NetworkUnreachable
            | HostUnreachable
            | TimedOut
    ) || e
        .raw_os_error()
        .is_some_and(|code| retry.iter().any(|errno| errno.raw_os_error() == code))
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("max_connections", &self.max_connections)
            .field("open", &self.control.open.get())
            .finish()
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("stopped", &self.control.stopped.get())
            .field("open", &self.control.open.get())
            .field("total", &self.control.total.get())
            .finish()
    }
}
