//! The `GOT:` echo server written the way tokio's own echo example is, with the two
//! things a fair peer needs: `TCP_NODELAY`, and the reply sent in one write without an
//! allocation (the prefix sits in front of the read buffer).
//!
//! It runs on tokio's current-thread runtime (one core, as coop) unless `--workers N`
//! asks for tokio's multi-thread runtime with N worker threads (the peer of
//! `coop-echo serve --threads N`).
//!
//! `tokio-echo [--host ADDR] [--port N] [--prefix TEXT] [--workers N]`; prints
//! `Listening on ADDR`.

use std::io;

#[path = "../../peer_args.rs"]
mod peer_args;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn main() -> io::Result<()> {
    let mut workers = None;
    let (host, port, prefix) = peer_args::parse_with(|flag, value| {
        if flag != "--workers" {
            return Ok(false);
        }
        match value.parse::<usize>() {
            Ok(n) if n >= 1 => workers = Some(n),
            _ => {
                return Err(peer_args::bad(format!(
                    "--workers takes a number of threads, 1 or more, not '{value}'"
                )));
            }
        }
        Ok(true)
    })?;
    let runtime = match workers {
        None => tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?,
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_io()
            .build()?,
    };
    runtime.block_on(async move {
        let listener = TcpListener::bind((host.as_str(), port)).await?;
        eprintln!("Listening on {}", listener.local_addr()?);
        loop {
            // Ride out accept errors (a reset in the queue, EMFILE) instead of ending.
            let Ok((stream, _)) = listener.accept().await else {
                tokio::task::yield_now().await;
                continue;
            };
            tokio::spawn(echo(stream, prefix.clone()));
        }
    })
}

async fn echo(mut stream: TcpStream, prefix: Vec<u8>) {
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
    let _ = stream.shutdown().await;
}
