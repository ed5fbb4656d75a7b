//! A connection whose handler panics ends alone: the server goes on, a client that
//! triggers nothing keeps being served, and the log names the peer of the panic.
//!
//! A library test: the real echo handler (`serve::handle`) under `coop::Server`, with a
//! handler in front of it that panics for one chosen client.

use std::cell::Cell;
use std::io::{self, Write};
use std::rc::Rc;
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use coop::net::TcpStream;
use coop::{Server, TcpListener};
use coop_echo::echo::Framing;
use coop_echo::serve::{self, Settings};

/// Log lines, collected.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

async fn round_trip(stream: &TcpStream, line: &[u8]) -> io::Result<Vec<u8>> {
    stream.write_all(line).await?;
    let mut reply = vec![0; 64];
    let n = coop::time::timeout(Duration::from_secs(10), stream.read(&mut reply)).await??;
    reply.truncate(n);
    Ok(reply)
}

#[test]
fn a_panicking_handler_leaves_the_other_clients_served() {
    let log = Log::default();
    let (done, finished) = mpsc::channel();
    let writer = log.clone();
    let test = thread::spawn(move || {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let outcome = tracing::subscriber::with_default(subscriber, || {
            coop::block_on(async {
                let settings = Rc::new(Settings {
                    prefix: Rc::from(&b"GOT:"[..]),
                    framing: Framing::Chunk,
                    quiet: false,
                    idle_timeout: None,
                    proxy_protocol: false,
                    per_source: None,
                    totals: Default::default(),
                });
                let server = Server::new(TcpListener::bind("127.0.0.1:0")?);
                let addr = server.local_addr()?;
                let doomed_port = Rc::new(Cell::new(0));
                drop(coop::spawn(server.serve({
                    let doomed_port = Rc::clone(&doomed_port);
                    move |stream, peer| {
                        let settings = Rc::clone(&settings);
                        let doomed = peer.port() == doomed_port.get();
                        async move {
                            if doomed {
                                panic!("a bug in this connection's handler");
                            }
                            serve::handle(stream, peer, settings).await;
                        }
                    }
                })));
                let steady = TcpStream::connect(addr).await?;
                assert_eq!(round_trip(&steady, b"Hello\n").await?, b"GOT:Hello\n");

                let doomed = coop::net::TcpStream::from_std({
                    let socket = std::net::TcpStream::connect(addr)?;
                    doomed_port.set(socket.local_addr()?.port());
                    socket
                })?;
                let mut buf = [0; 8];
                let n = coop::time::timeout(Duration::from_secs(10), doomed.read(&mut buf)).await?;
                assert!(
                    matches!(n, Ok(0) | Err(_)),
                    "the doomed connection is closed"
                );

                assert_eq!(round_trip(&steady, b"World\n").await?, b"GOT:World\n");
                io::Result::Ok(doomed_port.get())
            })
        });
        let _ = done.send(outcome);
    });
    let port = match finished.recv_timeout(Duration::from_secs(30)) {
        Ok(outcome) => outcome.unwrap(),
        Err(_) => panic!("the test did not finish in 30 s"),
    };
    test.join().unwrap();
    let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let line = format!(
        "Connection 127.0.0.1:{port}: the handler panicked: a bug in this connection's handler; the server goes on"
    );
    assert!(log.contains(&line), "no line '{line}' in:\n{log}");
}
