//! One thread's share of the load: its connections opened, then loaded on a runtime of
//! its own.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use coop::net::TcpStream;

use super::args::BenchArgs;
use super::connect::connect_all;
use super::connection::drive;
use super::load::{Load, pacer};
use super::pace::Pace;
use super::progress::{Progress, watch};
use super::report::Tally;
use super::verify::Tape;
use super::wire::{TlsWire, Wire};
use crate::tls::ClientTls;

/// One thread's share of the load.
#[derive(Debug)]
pub(super) struct Part {
    pub(super) connections: usize,
    /// Messages to send, in a counted run.
    pub(super) budget: Option<u64>,
    /// Sends per second, in an open-loop run.
    pub(super) rate: Option<f64>,
    pub(super) show_progress: bool,
}

/// What one thread measured.
pub(super) struct PartOutcome {
    pub(super) tally: Tally,
    pub(super) seconds: f64,
    /// How long opening its connections took (with their handshakes, over TLS).
    pub(super) connecting: f64,
    /// Connections it opened.
    pub(super) connected: usize,
}

/// Handshakes at once per thread, over TLS: enough to keep a server's core busy with
/// them (its part and the client's alternate), few enough not to measure its SYN queue.
const HANDSHAKE_LANES: usize = 8;

/// One thread's share, and what it needs to run it.
pub(super) struct Run<'a> {
    pub(super) args: &'a BenchArgs,
    pub(super) addr: SocketAddr,
    pub(super) target: &'a str,
    pub(super) prefix: &'a [u8],
    pub(super) part: &'a Part,
    pub(super) duration: Duration,
    pub(super) go: &'a Barrier,
}

impl Run<'_> {
    /// Runs the share on a runtime of its own. Every thread starts its load at once,
    /// after all have connected (`go`): connecting is not part of the load.
    pub(super) fn run(&self, tls: &Option<ClientTls>) -> io::Result<PartOutcome> {
        match tls {
            None => self.connect_and_load(1, |stream| std::future::ready(Ok(stream))),
            Some(ClientTls { config, name }) => {
                let connector = futures_rustls::TlsConnector::from(Arc::clone(config));
                let name = name.clone();
                self.connect_and_load(HANDSHAKE_LANES, move |stream| {
                    let handshake = connector.connect(name.clone(), stream);
                    async move {
                        let session = handshake.await.map_err(|e| {
                            io::Error::new(e.kind(), crate::tls::client_failure(&e))
                        })?;
                        let (stream, session) = session.into_inner();
                        Ok(TlsWire { session, stream })
                    }
                })
            }
        }
    }

    /// Opens the connections (`open` turns each new TCP stream into the load's transport,
    /// `lanes` at a time), waits for every thread at `go`, then runs the load.
    fn connect_and_load<W, F>(
        &self,
        lanes: usize,
        open: impl Fn(TcpStream) -> F + 'static,
    ) -> io::Result<PartOutcome>
    where
        W: Wire + 'static,
        F: Future<Output = io::Result<W>> + 'static,
    {
        let Run {
            args,
            addr,
            target,
            prefix,
            part,
            duration,
            go,
        } = *self;
        let prefix: Rc<[u8]> = Rc::from(prefix);
        let runtime = coop::Runtime::new();
        let connecting = Instant::now();
        let connected = runtime
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        let streams = connected.and_then(|runtime| {
            runtime.block_on(connect_all(
                addr,
                part.connections,
                target,
                args.send_proxy,
                // Several threads: `measure` says once how many failed in all.
                args.quiet || args.threads > 1,
                lanes,
                open,
            ))
        });
        let connecting = connecting.elapsed().as_secs_f64();
        // Every thread passes here once, connected or not: none waits for one that failed.
        go.wait();
        let runtime = runtime?;
        let (streams, timed) = match streams {
            Ok(opened) => opened,
            // None of its share connected: counted, as one thread counts the connections
            // it could not open; the other threads' load goes on.
            Err(e) => {
                let mut tally = Tally::new();
                tally.connect_failures = part.connections as u64;
                tally.fail(&e);
                return Ok(PartOutcome {
                    tally,
                    seconds: 0.0,
                    connecting,
                    connected: 0,
                });
            }
        };
        let tape = Tape::new(args.size as usize, &prefix)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no bytes left to send"))?;
        runtime.block_on(async {
            let opened = streams.len();
            // Timed from here: connecting is not part of the load.
            let start = Instant::now();
            let load = Rc::new(Load {
                tape: Rc::new(tape),
                prefix: Rc::clone(&prefix),
                framing: args.framing,
                pipeline: args.pipeline as usize,
                connections: opened,
                pace: part.rate.map(|rate| Pace {
                    start,
                    rate,
                    waiting: (0..opened).map(|_| Cell::new(None)).collect(),
                }),
                deadline: part.budget.is_none().then_some(start + duration),
                budget: Cell::new(part.budget.unwrap_or(u64::MAX)),
                tally: RefCell::new(if args.series.is_some() || args.plot.is_some() {
                    Tally::with_series()
                } else {
                    Tally::new()
                }),
                start,
                stall: Duration::from_secs_f64(args.stall_timeout),
                slo: args.slo,
                live: Cell::new(opened),
                watcher: Cell::new(None),
            });
            load.tally.borrow_mut().connect_failures = (part.connections - opened) as u64;
            load.tally.borrow_mut().merge(timed);
            for (id, stream) in streams.into_iter().enumerate() {
                drop(coop::spawn(drive(id, stream, Rc::clone(&load))));
            }
            drop(coop::spawn(pacer(Rc::clone(&load))));
            let progress = Progress::new(
                !part.show_progress,
                args.requests.is_none().then_some(duration),
            );
            watch(
                &load,
                start,
                Duration::from_secs_f64(args.stall_timeout),
                &progress,
            )
            .await;
            let seconds = start.elapsed().as_secs_f64();
            progress.finish();
            let tally = std::mem::replace(&mut *load.tally.borrow_mut(), Tally::new());
            Ok(PartOutcome {
                tally,
                seconds,
                connecting,
                connected: opened,
            })
        })
    }
}
