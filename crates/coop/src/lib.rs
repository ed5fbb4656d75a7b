//! A cooperative, single-threaded task scheduler: the generator scheduler of David
//! Beazley's echo server, with Rust's `async` functions as the generators.
//!
//! # The seed, mapped
//!
//! The seed is a page of Python: a deque of ready generators, two dicts where generators
//! wait for their socket (`recv_wait`, `send_wait`), and a `run()` loop that calls
//! `select()` when nothing is ready. On it, `tcp_server` starts one `echo_handler`
//! generator per client. Each piece has its counterpart here:
//!
//! | seed (Python)                              | coop (Rust)                                         |
//! |--------------------------------------------|-----------------------------------------------------|
//! | a generator function                       | an `async fn` or `async` block: a [`Future`] |
//! | `tasks = deque()`                          | the runtime's ready queue (FIFO)                    |
//! | `tasks.append(handler(client, addr))`      | [`spawn`]`(handler(stream, peer))`, a [`JoinHandle`] |
//! | `yield 'recv', sock`; `recv_wait[sock]`    | [`TcpStream::readable`]; [`TcpStream::read`] parks only on `WouldBlock` |
//! | `yield 'send', sock`; `send_wait[sock]`    | [`TcpStream::writable`]; [`TcpStream::write`] likewise |
//! | `select(recv_wait, send_wait, [])`         | the reactor: one epoll for every parked task        |
//! | `run()`                                    | [`block_on`], [`Runtime::block_on`]                 |
//! | `tcp_server(address, handler)`             | [`tcp_server`]`(addr, handler)`, [`serve`]          |
//! | `sock.accept()`                            | [`TcpListener::accept`]                             |
//!
//! A future's `.await` is the seed's `yield`: where the generator yields `('recv', sock)`
//! and the scheduler parks it in `recv_wait`, a coop future returns `Pending` and leaves
//! its task in the socket's read waiting area. When epoll reports the socket readable,
//! the runtime polls the task there and then (the seed moves it back to `tasks`; a wake
//! through a [`Waker`](std::task::Waker), from a timer or another task, does that here
//! too), and the poll resumes it where it stopped.
//!
//! # What it does better than the seed
//!
//! * I/O is tried first; a task parks only when the OS answers `WouldBlock`, not before
//!   every `recv`. Sockets are registered with the OS once, and readiness is cached.
//! * epoll has no 1,024-socket ceiling and no per-call cost per socket.
//! * [`TcpStream::write_all`] writes every byte (the seed's `send` may drop some).
//! * A task that finds its socket ready again and again yields after a bounded budget
//!   (127 ready operations, or about 200 µs of work, whichever comes first), so one
//!   flooding client cannot starve the others, however costly its messages.
//! * With nothing ready, the loop sleeps in the OS poll until a socket or a
//!   [timer](time) needs it: an idle server uses no CPU.
//! * A peer that falls silent is given up on ([`TcpStream::set_idle_timeout`]) by a
//!   clock the runtime keeps, at one store per read or write.
//!
//! # Example: the seed's echo server
//!
//! ```no_run
//! use std::net::SocketAddr;
//! use coop::net::TcpStream;
//!
//! async fn echo_handler(client: TcpStream, address: SocketAddr) {
//!     println!("Connection from {address}");
//!     let mut data = [0; 1000];
//!     loop {
//!         let n = match client.read(&mut data).await {
//!             Ok(0) | Err(_) => break, // closed by the client
//!             Ok(n) => n,
//!         };
//!         if client.write_all(&[b"GOT:", &data[..n]].concat()).await.is_err() {
//!             break;
//!         }
//!     }
//!     println!("Connection closed");
//! }
//!
//! fn main() -> std::io::Result<()> {
//!     coop::block_on(coop::tcp_server(("0.0.0.0", 25000), echo_handler))
//! }
//! ```
//!
//! # Example: a server and its client, in one thread
//!
//! ```
//! use coop::net::{TcpListener, TcpStream};
//!
//! coop::block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     let server = coop::spawn(async move {
//!         let (client, _) = listener.accept().await?;
//!         let mut data = [0; 100];
//!         let n = client.read(&mut data).await?;
//!         client.write_all(&[b"GOT:", &data[..n]].concat()).await
//!     });
//!
//!     let stream = TcpStream::connect(addr).await?;
//!     stream.write_all(b"Hello\n").await?;
//!     let mut reply = [0; 100];
//!     let n = stream.read(&mut reply).await?;
//!     assert_eq!(&reply[..n], b"GOT:Hello\n");
//!     server.await? // a JoinError (the task panicked) converts to io::Error
//! })?;
//! # std::io::Result::Ok(())
//! ```
//!
//! # Tasks: how they end
//!
//! * **The future is dropped the moment its task ends**: it returned, it panicked, or it
//!   was cancelled. Its sockets close and its guards run then, not when the last handle
//!   or waker goes. After that, waking the task does nothing.
//! * **Awaiting a [`JoinHandle`]** gives `Ok(output)` or a [`JoinError`] saying why there
//!   is none. Dropping the handle *detaches* the task (it runs on, as every task of the
//!   seed does); [`JoinHandle::abort`] cancels it: its future is dropped, unfinished, the
//!   next time the runtime runs.
//! * **A panic stays in its task**, as a panic in a [`std::thread`] does: the runtime and
//!   every other task go on, and the handle reports [`JoinError::Panicked`]. Only a panic
//!   of the future given to `block_on` unwinds out of `block_on`.
//! * **Every operation is cancel safe**: a read, accept, sleep or readiness future that
//!   is dropped before it completes has consumed nothing, and leaves no waiter behind.
//!   (A dropped [`TcpStream::write_all`] may have written a prefix of its buffer.)
//!
//! ```
//! coop::block_on(async {
//!     let buggy = coop::spawn(async { panic!("a bug in one task") });
//!     let fine = coop::spawn(async { "the others go on" });
//!     assert!(buggy.await.unwrap_err().is_panic());
//!     assert_eq!(fine.await.unwrap(), "the others go on");
//! });
//! ```
//!
//! # One thread
//!
//! A runtime and everything it runs stay on the thread that calls `block_on`: tasks need
//! not be `Send`, and the scheduler takes no locks. Wakers are `Send` as `std` requires;
//! a wake from another thread reaches the runtime through a small inbox. To use several
//! cores, run one runtime per core, sharing nothing on the message path:
//!
//! * [`threads::Builder`] starts the threads, a runtime on each, and joins them;
//! * [`net::bind_reuse_port`] gives each thread a listener of its own on one port, and
//!   the kernel spreads the clients;
//! * a [`Remote`] (`Send`, one reference count) starts a task on another thread's
//!   runtime or asks it to stop ([`stop_requested`]), through that same inbox;
//! * a [`SharedLimit`] caps the connections open across the threads' servers, at two
//!   atomic operations per connection.
//!
//! Sockets, timers and signals belong to the runtime they were made in, and are woken
//! only by it: make them inside the `block_on` that uses them.
//!
//! # Building on coop
//!
//! * **I/O traits.** [`TcpStream`] and `&TcpStream` implement `futures-io`'s `AsyncRead`
//!   and `AsyncWrite` (`close` shuts the write side down), so what is written against
//!   those traits takes a coop stream as it is: `futures::io::copy`, `BufReader::lines`,
//!   codecs, TLS wrappers of that family. Every socket gives up its descriptor
//!   (`AsFd`, `AsRawFd`) for the socket options coop does not wrap.
//! * **Combinators and channels.** The `futures` crate's `select!`, `join!`,
//!   `FuturesUnordered` and channels work on coop: they need only a `Waker`
//!   (`tests/combinators.rs` runs them against coop's sockets).
//! * **hyper 1.x** serves HTTP/1 on coop through `smol-hyper`'s `FuturesIo`, an adapter
//!   from `futures-io`'s traits to hyper's (`examples/http_hello.rs`, fetched with curl
//!   by its test). What hyper asks of a runtime beyond that, an executor for HTTP/2's
//!   streams and a timer for its timeouts, is `coop::hyper` (`features = ["hyper"]`);
//!   `coop-echo serve --http` serves HTTP/1.1, HTTP/2 and WebSocket with them.
//! * **TLS:** `futures-rustls` takes a coop stream as it is; `coop-echo serve
//!   --tls-cert` is built on it.
//! * **Crates written for tokio's I/O traits** take a coop stream as it is with the
//!   `tokio` feature (`coop = { features = ["tokio"] }`: tokio's `AsyncRead` and
//!   `AsyncWrite` for [`TcpStream`] and `&TcpStream`, from tokio's traits alone, no tokio
//!   runtime), or through an adapter such as `tokio-util`'s `compat` module.
//! * **Blocking work** (a library that blocks, a file, a host name's lookup) goes to
//!   [`spawn_blocking`]'s few helper threads; [`TcpStream::connect`] looks names up there
//!   by itself, so the runtime's thread never waits for DNS.
//! * **Many tasks as one**: a [`JoinSet`] joins them as they end and aborts the rest when
//!   dropped; [`time::interval`] ticks on a schedule; [`signal::ctrl_c`] waits for Ctrl-C;
//!   [`net::UnixStream`] and [`net::UnixListener`] serve a path as TCP serves a port.
//! * **What does not work:** a crate that calls `tokio::spawn` or tokio's timers needs a
//!   tokio runtime on its thread; coop is not one.
//!
//! The example below, as most here, uses the `futures` crate's `io` helpers: a project
//! of its own needs `futures = "0.3"` beside coop in its `Cargo.toml`.
//!
//! ```
//! use coop::net::{TcpListener, TcpStream};
//! use futures::io::{AsyncReadExt, AsyncWriteExt};
//!
//! coop::block_on(async {
//!     let listener = TcpListener::bind("127.0.0.1:0")?;
//!     let addr = listener.local_addr()?;
//!     // An echo server in one line of `futures::io`.
//!     let server = coop::spawn(async move {
//!         let (stream, _) = listener.accept().await?;
//!         futures::io::copy(&stream, &mut &stream).await
//!     });
//!     let mut client = TcpStream::connect(addr).await?;
//!     client.write_all(b"ping").await?;
//!     client.close().await?; // EOF: the server's copy ends
//!     let mut echoed = String::new();
//!     client.read_to_string(&mut echoed).await?;
//!     assert_eq!(echoed, "ping");
//!     assert_eq!(server.await??, 4);
//!     std::io::Result::Ok(())
//! })?;
//! # std::io::Result::Ok(())
//! ```

#![warn(missing_docs, missing_debug_implementations)]
#![deny(unsafe_code)]

mod alarm;
mod blocking;
mod context;
#[cfg(feature = "hyper")]
pub mod hyper;
mod inbox;
mod join_set;
pub mod net;
mod oneshot;
mod reactor;
mod remote;
mod scheduler;
mod server;
pub mod signal;
mod slab;
mod task;
pub mod threads;
pub mod time;
mod timers;
pub mod trace;
mod waiter;
mod waker;

pub use blocking::{MAX_BLOCKING_THREADS, spawn_blocking};
pub use join_set::JoinSet;
pub use net::{TcpListener, TcpStream, UdpSocket};
pub use remote::{Remote, RemoteHandle, StopRequested, remote, stop_requested};
pub use scheduler::{Runtime, Stats, block_on, spawn, spawn_named, stats, yield_now};
pub use server::{Handler, Server, ServerHandle, SharedLimit, Stopped, serve, tcp_server};
pub use task::{JoinError, JoinHandle};
