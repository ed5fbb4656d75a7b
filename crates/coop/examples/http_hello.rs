//! An HTTP/1.1 server on coop with hyper 1.x: every request gets `200 OK` and a greeting,
//! over keep-alive connections.
//!
//! ```text
//! cargo run -p coop --example http_hello                  # listens on 127.0.0.1:8080
//! cargo run -p coop --example http_hello -- 127.0.0.1:0   # a free port: the first line says which
//! curl http://127.0.0.1:8080/
//! ```
//!
//! hyper needs its own I/O traits: `smol-hyper`'s `FuturesIo` gives them to anything
//! with `futures-io`'s, which coop's streams have. An HTTP/1 connection needs no
//! executor or timer from the runtime; each one runs as a coop task of `coop::serve`.

use std::convert::Infallible;
use std::io::{self, Write};
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use smol_hyper::rt::FuturesIo;

const USAGE: &str = "\
usage: http_hello [ADDRESS]

An HTTP/1.1 server on coop with hyper: every request gets 200 and a greeting.
ADDRESS is HOST:PORT to listen on, 127.0.0.1:8080 if not given (127.0.0.1:0: a free port,
which the first line says).";

fn main() -> ExitCode {
    let addr = match std::env::args().nth(1) {
        Some(help) if help == "-h" || help == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(addr) => addr,
        None => "127.0.0.1:8080".into(),
    };
    match coop::block_on(serve(&addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("http_hello: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: &str) -> io::Result<()> {
    let listener = coop::TcpListener::bind(addr)?;
    println!("Listening on {}", listener.local_addr()?);
    io::stdout().flush()?;
    coop::serve(listener, |stream, peer| async move {
        let connection =
            http1::Builder::new().serve_connection(FuturesIo::new(stream), service_fn(hello));
        if let Err(e) = connection.await {
            eprintln!("{peer}: {e}");
        }
    })
    .await;
    Ok(())
}

async fn hello(_request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(
        b"Hello from coop!\n",
    ))))
}
