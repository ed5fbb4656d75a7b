//! `tcp_server(address, handler)`: the seed's accept loop, made to survive.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::net::{TcpListener, TcpStream};
use crate::{spawn, time};

/// How long the accept loop rests after an error that says the process or the system is
/// out of something (file descriptors, buffers, memory). Freed resources are picked up
/// within this time; the loop never spins on the error.
const BACKOFF: Duration = Duration::from_millis(100);

/// Binds `addr` and serves it forever, starting `handler(stream, peer)` as a task for
/// every client: the seed's `tcp_server`.
///
/// Fails only if it cannot bind (the port is taken, or not permitted). See [`serve`] for
/// what it does with errors after that.
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
/// task for each.
///
/// No error ends it:
///
/// * an error that belongs to one connection (it was reset or aborted while queued, a
///   network error `accept` passes on, an interrupted call) is skipped, and the next
///   client accepted at once;
/// * any other error (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`: a limit is reached) is
///   logged once, when it starts, and the loop rests 100 ms between tries until it
///   clears. The clients already connected are served meanwhile.
pub async fn serve<H, F>(listener: TcpListener, mut handler: H)
where
    H: FnMut(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + 'static,
{
    let mut failing = false;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if failing {
                    tracing::info!("accepting connections again");
                    failing = false;
                }
                drop(spawn(handler(stream, peer)));
            }
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(
                        "cannot accept connections: {e}; retrying every {} ms until it clears",
                        BACKOFF.as_millis()
                    );
                    failing = true;
                }
                time::sleep(BACKOFF).await;
            }
        }
    }
}

/// Errors of one queued connection, not of the listener (see `accept(2)`: Linux passes
/// pending network errors of the new socket on as errors of `accept`).
fn is_connection_error(e: &io::Error) -> bool {
    use io::ErrorKind::*;
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
    )
}
