//! The seed's echo server, line for line: its `tcp_server` and `echo_handler`, with the
//! Python each line stands for in the comment beside it.
//!
//! ```text
//! cargo run -p coop --example seed_echo                  # listens on 0.0.0.0:25000
//! cargo run -p coop --example seed_echo -- 127.0.0.1:25001
//! nc localhost 25000
//! ```
//!
//! It keeps the seed's simplicity, and so one of its flaws: an `accept` error ends the
//! server. `coop::tcp_server` is this loop made to ride such errors out.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;

use coop::net::{TcpListener, TcpStream};

const USAGE: &str = "\
usage: seed_echo [ADDRESS]

The seed's echo server: each chunk a client sends comes back with GOT: in front.
ADDRESS is HOST:PORT to listen on, 0.0.0.0:25000 if not given ([::1]:25000 for IPv6).";

// TCP Server implementation
async fn tcp_server<H, F>(address: &str, handler: H) -> io::Result<()>
where
    H: Fn(TcpStream, SocketAddr) -> F,
    F: Future<Output = ()> + 'static,
{
    let sock = TcpListener::bind(address) // socket(); setsockopt(SO_REUSEADDR); bind(); listen()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))?;
    println!("Listening on {}", sock.local_addr()?);

    loop {
        let (client, addr) = sock.accept().await?; // yield 'recv', sock; sock.accept()
        drop(coop::spawn(handler(client, addr))); // tasks.append(handler(client, addr))
    }
}

// Echo handler - echoes back whatever the client sends
async fn echo_handler(client: TcpStream, address: SocketAddr) {
    println!("Connection from {address}");
    let mut data = [0; 1000];

    loop {
        let n = client.read(&mut data).await.unwrap_or(0); // yield 'recv', client; client.recv(1000)

        if n == 0 {
            break; // Client closed connection
        }

        let reply = [b"GOT:", &data[..n]].concat();
        if client.write_all(&reply).await.is_err() {
            // yield 'send', client; client.send(b'GOT:' + data), but every byte of it
            break;
        }
    }

    println!("Connection closed");
} // client.close(): the stream closes when it goes out of scope

// Start the server
fn main() -> ExitCode {
    let address = match std::env::args().nth(1) {
        Some(help) if help == "-h" || help == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(address) => address,
        None => "0.0.0.0:25000".to_string(),
    };
    // tasks.append(tcp_server(...)); run(): it returns only if the server fails.
    match coop::block_on(tcp_server(&address, echo_handler)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, as a person reads it, rather than `main`'s debug dump of the error.
            eprintln!("seed_echo: {e}");
            ExitCode::FAILURE
        }
    }
}
