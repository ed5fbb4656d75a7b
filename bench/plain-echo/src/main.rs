//! The `GOT:` echo server written the plain way on coop, line for line as `tokio-echo`
//! is on tokio: `read` and `write_all`, `TCP_NODELAY`, and the reply sent in one write
//! without an allocation (the prefix sits in front of the read buffer). Where
//! `coop-echo` parks through `poll_read_ready`, this measures the futures a library user
//! reaches for first.
//!
//! `plain-echo [--host ADDR] [--port N] [--prefix TEXT]`; prints `Listening on ADDR`.

use std::io;

use coop::net::{TcpListener, TcpStream};

#[path = "../../peer_args.rs"]
mod peer_args;

fn main() -> io::Result<()> {
    let (host, port, prefix) = peer_args::parse()?;
    coop::block_on(async move {
        let listener = TcpListener::bind((host.as_str(), port))?;
        eprintln!("Listening on {}", listener.local_addr()?);
        loop {
            // Ride out accept errors (a reset in the queue, EMFILE) instead of ending.
            let Ok((stream, _)) = listener.accept().await else {
                coop::yield_now().await;
                continue;
            };
            drop(coop::spawn(echo(stream, prefix.clone())));
        }
    })
}

async fn echo(stream: TcpStream, prefix: Vec<u8>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0; prefix.len() + 64 * 1024];
    buf[..prefix.len()].copy_from_slice(&prefix);
    loop {
        let n = match stream.read(&mut buf[prefix.len()..]).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if stream.write_all(&buf[..prefix.len() + n]).await.is_err() {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Write);
}
