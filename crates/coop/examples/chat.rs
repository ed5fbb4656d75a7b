//! A line chat on coop with the `futures` crate's channels and `select!`: each line a
//! client sends goes to every other client, as `ADDR: line`.
//!
//! ```text
//! cargo run -p coop --example chat                  # listens on 127.0.0.1:7070
//! cargo run -p coop --example chat -- 127.0.0.1:0   # a free port: the first line says which
//! nc localhost 7070                                 # in two or three terminals
//! ```
//!
//! Memory stays bounded: a line is at most 4 KiB, and a client that falls 64 lines
//! behind the others is let go rather than queued for without end.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;

use coop::net::{TcpListener, TcpStream};
use futures::channel::mpsc;
use futures::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use futures::{FutureExt, StreamExt, select};

/// The longest line, newline included.
const MAX_LINE: usize = 4096;
/// Lines waiting for one slow client, at most.
const BEHIND: usize = 64;

/// Who is connected: each client's queue of lines to send, by its address.
type Room = Rc<RefCell<HashMap<SocketAddr, mpsc::Sender<Rc<str>>>>>;

const USAGE: &str = "\
usage: chat [ADDRESS]

A line chat: each line a client sends goes to every other client, as ADDR: line.
ADDRESS is HOST:PORT to listen on, 127.0.0.1:7070 if not given (127.0.0.1:0: a free port,
which the first line says).";

fn main() -> ExitCode {
    let addr = match std::env::args().nth(1) {
        Some(help) if help == "-h" || help == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(addr) => addr,
        None => "127.0.0.1:7070".into(),
    };
    match coop::block_on(serve(&addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(addr: &str) -> io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    println!("Listening on {}", listener.local_addr()?);
    let room = Room::default();
    coop::serve(listener, move |stream, peer| {
        let room = Rc::clone(&room);
        async move {
            if let Err(e) = talk(&stream, peer, &room).await {
                eprintln!("{peer}: {e}");
            }
            room.borrow_mut().remove(&peer);
        }
    })
    .await;
    Ok(())
}

/// One client: its lines go to the others, theirs come to it, until it leaves.
async fn talk(stream: &TcpStream, peer: SocketAddr, room: &Room) -> io::Result<()> {
    let (sender, mut inbox) = mpsc::channel::<Rc<str>>(BEHIND);
    room.borrow_mut().insert(peer, sender);
    let mut reader = BufReader::new(stream);
    // A line read in part stays here when the other branch wins: `read_until` keeps
    // what it took in `line`, and the next round goes on from there.
    let mut line = Vec::with_capacity(128);
    loop {
        let mut limited = (&mut reader).take((MAX_LINE - line.len()) as u64);
        select! {
            read = limited.read_until(b'\n', &mut line).fuse() => {
                if read? == 0 {
                    // The client left (or sent a line too long).
                    return match line.len() {
                        MAX_LINE => Err(io::Error::other("line too long")),
                        _ => Ok(()),
                    };
                }
                if line.last() == Some(&b'\n') {
                    let text = String::from_utf8_lossy(&line);
                    broadcast(room, peer, format!("{peer}: {text}").into());
                    line.clear();
                }
            }
            heard = inbox.next() => match heard {
                Some(text) => stream.write_all(text.as_bytes()).await?,
                None => return Err(io::Error::other("fell too far behind")),
            },
        }
    }
}

/// Queues `text` for everyone but `from`. A client whose queue is full is let go: its
/// sender is dropped, so its task hears the end of its inbox once the queue is sent.
fn broadcast(room: &Room, from: SocketAddr, text: Rc<str>) {
    room.borrow_mut()
        .retain(|&peer, queue| peer == from || queue.try_send(Rc::clone(&text)).is_ok());
}
