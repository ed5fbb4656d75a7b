//! Opening the load's connections, before the load starts.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use coop::net::TcpStream;
use coop::time::timeout;

use super::report::Tally;
use crate::proxy::{self, SendProxy};

/// Opens `n` connections, `lanes` at a time (one: one after another; a burst of thousands
/// of simultaneous connects would only measure the server's SYN queue), each made ready
/// by `open` (a TLS handshake) within the connect time limit. Returns them, with how long
/// each took and how many were reset (in a [`Tally`]'s `connect` and `faults`). Fails if
/// none opens.
pub(super) async fn connect_all<W, F>(
    addr: SocketAddr,
    n: usize,
    target: &str,
    send_proxy: Option<SendProxy>,
    quiet: bool,
    lanes: usize,
    open: impl Fn(TcpStream) -> F + 'static,
) -> io::Result<(Vec<W>, Tally)>
where
    W: 'static,
    F: Future<Output = io::Result<W>> + 'static,
{
    let open = Rc::new(open);
    let started = Rc::new(Cell::new(0));
    let timed = Rc::new(RefCell::new(Tally::new()));
    let lanes: Vec<_> = (0..lanes.clamp(1, n.max(1)))
        .map(|_| {
            let (open, started, timed) = (Rc::clone(&open), Rc::clone(&started), Rc::clone(&timed));
            coop::spawn(async move {
                let mut streams = Vec::new();
                let mut first_error = None;
                while started.get() < n {
                    started.set(started.get() + 1);
                    let ready = async {
                        let stream = TcpStream::connect(addr).await?;
                        stream.set_nodelay(true)?;
                        if let Some(version) = send_proxy {
                            proxy::send_header(&stream, version).await?;
                        }
                        open(stream).await
                    };
                    let began = Instant::now();
                    match timeout(Duration::from_secs(10), ready).await {
                        Ok(Ok(stream)) => {
                            Tally::record_in(&mut timed.borrow_mut().connect, began.elapsed());
                            streams.push(stream);
                        }
                        Ok(Err(e)) => {
                            if e.kind() == io::ErrorKind::ConnectionReset {
                                timed.borrow_mut().faults.reset += 1;
                            }
                            first_error.get_or_insert(e);
                        }
                        Err(elapsed) => {
                            first_error.get_or_insert(elapsed.into());
                        }
                    }
                }
                (streams, first_error)
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(n);
    let mut first_error = None;
    for lane in lanes {
        let (opened, failed) = lane
            .await
            .unwrap_or_else(|e| (Vec::new(), Some(io::Error::other(e.to_string()))));
        streams.extend(opened);
        if let Some(e) = failed {
            first_error.get_or_insert(e);
        }
    }
    match (streams.is_empty(), first_error) {
        (true, Some(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot connect to {target}: {e}"),
        )),
        (false, Some(e)) => {
            if !quiet {
                eprintln!(
                    "coop-echo: {} of {n} connections failed: {e}",
                    n - streams.len()
                );
            }
            Ok((streams, timed.replace(Tally::new())))
        }
        (_, None) => Ok((streams, timed.replace(Tally::new()))),
    }
}
