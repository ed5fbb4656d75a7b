//! Nothing allocates on the per-message path: a counting allocator watches the server's
//! thread while a client does thousands of round trips.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use coop::net::TcpListener;
use coop_echo::echo::Framing;
use coop_echo::serve::{self, Settings};
use coop_echo::worker;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

/// Counts allocations per thread, so the test harness's own threads do not blur it.
struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees are ours; the counter is a const-initialised thread-local `Cell`
// without a destructor, which never allocates and is valid for the thread's whole life.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with this `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as for `dealloc`; the caller upholds `realloc`'s contract on `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs an echo server in each framing on a thread of its own, plus a control port that
/// answers each byte it reads with that thread's allocation count.
fn start_server() -> (Vec<std::net::SocketAddr>, std::net::SocketAddr) {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        coop::block_on(async move {
            let mut echo_addrs = Vec::new();
            for framing in [Framing::Chunk, Framing::Line] {
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                echo_addrs.push(listener.local_addr().unwrap());
                let settings = Settings {
                    prefix: Rc::from(&b"GOT:"[..]),
                    framing,
                    quiet: true,
                    // The default: the idle timer must cost no allocation either.
                    idle_timeout: Some(Duration::from_secs(300)),
                    proxy_protocol: false,
                    per_source: None,
                    totals: Default::default(),
                };
                drop(coop::spawn(serve::run(listener, settings)));
            }
            let control = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send((echo_addrs, control.local_addr().unwrap()))
                .unwrap();
            let (stream, _) = control.accept().await.unwrap();
            let mut byte = [0; 1];
            while stream.read(&mut byte).await.unwrap_or(0) == 1 {
                let count = ALLOCATIONS.with(Cell::get);
                stream.write_all(&count.to_le_bytes()).await.unwrap();
            }
        });
    });
    rx.recv_timeout(Duration::from_secs(20)).unwrap()
}

fn allocations_so_far(control: &mut TcpStream) -> u64 {
    control.write_all(b"?").unwrap();
    let mut count = [0; 8];
    control.read_exact(&mut count).unwrap();
    u64::from_le_bytes(count)
}

fn round_trips(stream: &mut TcpStream, n: usize) {
    let mut message: [u8; 64] =
        *b"message 0000 of a steady stream, 64 bytes with its newline.....\n";
    let mut reply = [0; 4 + 64];
    for i in 0..n {
        message[8..12].copy_from_slice(format!("{:04}", i % 10_000).as_bytes());
        stream.write_all(&message).unwrap();
        stream.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..4], b"GOT:");
        assert_eq!(reply[4..], message);
    }
}

#[test]
fn the_echo_path_allocates_nothing_per_message() {
    let (echo_addrs, control_addr) = start_server();
    let mut control = TcpStream::connect(control_addr).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Warm the control connection up too: its task's first wait for a byte makes the
    // socket's waiting area (once per socket), which must not land between two counts.
    allocations_so_far(&mut control);
    for addr in echo_addrs {
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        client.set_nodelay(true).unwrap();
        round_trips(&mut client, 1_000); // warm up: buffers and queues reach their size
        let before = allocations_so_far(&mut control);
        assert!(
            before > 0,
            "the counter sees the server thread's allocations"
        );
        round_trips(&mut client, 10_000);
        let after = allocations_so_far(&mut control);
        assert_eq!(
            after - before,
            0,
            "allocations on the server thread for 10,000 echoes"
        );
    }
}

/// What an idle connection holds besides its socket is mostly its handler's state: kept
/// under 512 bytes (a PROXY header's reading and a blocked reply's waiting are boxed,
/// and live only while they are needed), and the peer's address is kept once, in the
/// connection's guard; 632 bytes in a release build before, 336 after, 216 once the
/// runtime kept the idle clock.
#[test]
fn a_connection_s_state_stays_small() {
    coop::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let settings = Rc::new(Settings {
            prefix: Rc::from(&b"GOT:"[..]),
            framing: Framing::Chunk,
            quiet: true,
            idle_timeout: Some(Duration::from_secs(300)),
            proxy_protocol: true,
            per_source: None,
            totals: Default::default(),
        });
        let handler = serve::handle(stream, peer, settings);
        let size = std::mem::size_of_val(&handler);
        eprintln!("a connection's handler state: {size} bytes");
        assert!(size <= 512, "{size} bytes");
    });
}

/// The same on two serving threads, as `serve --threads 2` runs them (`worker::run`, a
/// listener each on one port, the connection limit shared): neither thread allocates
/// per message, and nothing crosses between them.
#[test]
fn the_echo_path_on_two_threads_allocates_nothing_per_message() {
    echo_on_two_threads_allocates_nothing_per_message(None);
}

/// The same where faults may be set (`--fault`, or an admin address) but none is in
/// force: the accept loop looks, and a message costs what it did.
#[test]
fn with_no_fault_in_force_the_echo_path_allocates_nothing_per_message() {
    let table = coop_echo::fault::Table::new(Vec::new(), Some(1));
    echo_on_two_threads_allocates_nothing_per_message(Some(Arc::new(table)));
}

fn echo_on_two_threads_allocates_nothing_per_message(faults: Option<Arc<coop_echo::fault::Table>>) {
    const CLIENTS: usize = 32;
    let listeners = coop::net::bind_reuse_port("127.0.0.1:0", 2).unwrap();
    let addr = listeners[0].local_addr().unwrap();
    let controls: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let control_addrs: Vec<_> = controls.iter().map(|c| c.local_addr().unwrap()).collect();
    let config = worker::Config {
        prefix: Arc::from(&b"GOT:"[..]),
        framing: Framing::Chunk,
        quiet: true,
        idle_timeout: Some(Duration::from_secs(300)),
        proxy_protocol: false,
        tls: None,
        limit: worker::Limit::Shared(coop::SharedLimit::new(1000)),
        per_source: None,
        trace: None,
        udp_rate: None,
        hurry: Arc::default(),
        http: None,
        faults,
    };
    let threads = coop::threads::Builder::new()
        .spawn(listeners.into_iter().zip(controls).enumerate().map(
            |(index, (listener, control))| {
                let config = config.clone();
                move || async move {
                    drop(coop::spawn(answer_counts(control)));
                    let sockets = worker::Sockets {
                        tcp: listener,
                        udp: None,
                        unix: None,
                        http: None,
                    };
                    worker::run(index, sockets, config).await
                }
            },
        ))
        .unwrap();

    let mut controls: Vec<TcpStream> = control_addrs
        .iter()
        .map(|&addr| {
            let control = TcpStream::connect(addr).unwrap();
            control
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            control
        })
        .collect();
    let mut clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| {
            let client = TcpStream::connect(addr).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            client.set_nodelay(true).unwrap();
            client
        })
        .collect();
    for client in &mut clients {
        round_trips(client, 200); // warm up
    }
    let before: Vec<(u64, u64)> = controls.iter_mut().map(counts).collect();
    // The kernel hashed the 32 connections: both threads have some (2^-31 otherwise).
    assert!(before.iter().all(|&(_, open)| open > 0), "{before:?}");
    for client in &mut clients {
        round_trips(client, 500);
    }
    let after: Vec<(u64, u64)> = controls.iter_mut().map(counts).collect();
    for (thread, (&(before, _), &(after, _))) in before.iter().zip(&after).enumerate() {
        assert_eq!(
            after - before,
            0,
            "allocations on serving thread {thread} for its share of 16,000 echoes"
        );
    }
    drop(clients);
    drop(controls);
    threads.stop();
    for outcome in threads.join() {
        outcome.unwrap();
    }
}

/// Answers each byte read with this thread's allocation count and open connections.
async fn answer_counts(control: std::net::TcpListener) {
    let control = TcpListener::from_std(control).unwrap();
    let (stream, _) = control.accept().await.unwrap();
    let mut byte = [0; 1];
    while stream.read(&mut byte).await.unwrap_or(0) == 1 {
        let allocations = ALLOCATIONS.with(Cell::get);
        let open = worker::snapshot().open;
        let mut answer = [0; 16];
        answer[..8].copy_from_slice(&allocations.to_le_bytes());
        answer[8..].copy_from_slice(&open.to_le_bytes());
        if stream.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A thread's allocation count and open connections.
fn counts(control: &mut TcpStream) -> (u64, u64) {
    control.write_all(b"?").unwrap();
    let mut answer = [0; 16];
    control.read_exact(&mut answer).unwrap();
    let word = |at: usize| u64::from_le_bytes(answer[at..at + 8].try_into().unwrap());
    (word(0), word(8))
}
