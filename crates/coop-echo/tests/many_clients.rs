//! Test 3: a thousand clients at once, on both sides of the socket one thread each.

mod common;

use std::io;
use std::rc::Rc;
use std::time::Duration;

use common::Server;
use coop::net::TcpStream;

const CLIENTS: usize = 1000;
const ROUND_TRIPS: usize = 10;

#[test]
fn a_thousand_clients_at_once_each_get_their_own_replies() {
    let server = Server::start(&["--quiet"]);
    let addr = server.addr;

    let outcome = coop::block_on(coop::time::timeout(Duration::from_secs(120), async move {
        // Every client connects before any of them talks: all 1,000 are open at once.
        let mut streams = Vec::with_capacity(CLIENTS);
        for _ in 0..CLIENTS {
            streams.push(Rc::new(TcpStream::connect(addr).await?));
        }
        let clients: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(i, stream)| coop::spawn(talk(i, Rc::clone(stream))))
            .collect();
        let mut replies = 0;
        for client in clients {
            replies += client.await??;
        }
        io::Result::Ok(replies)
    }));

    let replies = outcome
        .expect("done within the time limit")
        .expect("no client failed");
    assert_eq!(replies, CLIENTS * ROUND_TRIPS);
}

/// One client's round trips, each message its own, each reply checked.
async fn talk(client: usize, stream: Rc<TcpStream>) -> io::Result<usize> {
    let mut checked = 0;
    for round in 0..ROUND_TRIPS {
        let message = format!("client {client} says {round}\n");
        stream.write_all(message.as_bytes()).await?;
        let expected = format!("GOT:{message}");
        let mut reply = vec![0; expected.len()];
        let mut got = 0;
        while got < reply.len() {
            match stream.read(&mut reply[got..]).await? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        assert_eq!(String::from_utf8_lossy(&reply), expected);
        checked += 1;
    }
    Ok(checked)
}
