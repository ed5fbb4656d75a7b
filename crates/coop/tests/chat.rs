//! The `chat` example with three clients: a line from one reaches the other two and not
//! its sender, and a client that leaves does not disturb the others.
#![cfg(not(miri))]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

struct Client {
    addr: SocketAddr,
    writer: TcpStream,
    lines: std::io::Lines<BufReader<TcpStream>>,
}

impl Client {
    fn join(server: SocketAddr) -> Client {
        let stream = TcpStream::connect(server).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            addr: stream.local_addr().unwrap(),
            writer: stream.try_clone().unwrap(),
            lines: BufReader::new(stream).lines(),
        }
    }

    fn say(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
    }

    fn hears(&mut self) -> String {
        self.lines
            .next()
            .expect("a line")
            .expect("read within 20 s")
    }
}

#[test]
fn a_line_reaches_the_others_and_a_leaver_disturbs_no_one() {
    let chat = common::Example::start("chat", &["127.0.0.1:0"]);
    let server = chat.addr;

    let (mut a, mut b, mut c) = (
        Client::join(server),
        Client::join(server),
        Client::join(server),
    );
    // c speaks first: a and b are in the room by then (the server takes clients in the
    // order they connected, and a client's task joins the room before it reads).
    c.say("c here");
    assert_eq!(a.hears(), format!("{}: c here", c.addr));
    assert_eq!(b.hears(), format!("{}: c here", c.addr));

    a.say("hello from a");
    assert_eq!(b.hears(), format!("{}: hello from a", a.addr));
    assert_eq!(c.hears(), format!("{}: hello from a", a.addr));
    // a did not get its own line: the next one it hears is b's.
    b.say("from b");
    assert_eq!(a.hears(), format!("{}: from b", b.addr));
    assert_eq!(c.hears(), format!("{}: from b", b.addr));

    // c leaves; a and b go on.
    drop(c);
    a.say("after c left");
    assert_eq!(b.hears(), format!("{}: after c left", a.addr));
    b.say("still here");
    assert_eq!(a.hears(), format!("{}: still here", b.addr));
    drop(chat);
}
