//! coop's sockets under the `futures` crate's I/O: `futures::io::copy` as an echo server,
//! `BufReader::lines` as a client, and a socket option set through the descriptor.
#![cfg(not(miri))]

mod common;

use std::io;

use common::{LIMIT, bounded};
use coop::net::{TcpListener, TcpStream};
use futures::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use futures::{StreamExt, join};

/// Bytes that repeat nowhere a misplaced or lost chunk would go unnoticed.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// An echo server written with `futures::io::copy` over a coop stream (read through one
/// reference, written through another) passes 16 MiB exactly, then the EOF.
#[test]
fn futures_io_copy_echoes_16_mib_exactly() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            let server = coop::spawn(async move {
                let (stream, _) = listener.accept().await?;
                let (reader, mut writer) = (&stream, &stream);
                let copied = futures::io::copy(reader, &mut writer).await?;
                writer.close().await?; // the write side's shutdown: the client reads EOF
                io::Result::Ok(copied)
            });

            let payload = pattern(16 << 20);
            let client = TcpStream::connect(addr).await?;
            let (mut to_server, mut from_server) = (&client, &client);
            let sending = async {
                to_server.write_all(&payload).await?;
                to_server.close().await
            };
            let mut echoed = Vec::with_capacity(payload.len());
            let receiving = from_server.read_to_end(&mut echoed);
            let (sent, received) = join!(sending, receiving);
            sent?;
            assert_eq!(received?, payload.len());
            assert!(echoed == payload, "the echo differs from what was sent");
            assert_eq!(server.await??, payload.len() as u64);
            io::Result::Ok(())
        })
        .unwrap();
    });
}

/// The seed's session, read with `BufReader::lines` over a coop stream: `Hello` and
/// `World` come back as `GOT:Hello` and `GOT:World`, one line at a time.
#[test]
fn buf_reader_lines_reads_the_seed_session() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let addr = listener.local_addr()?;
            // The seed's echo handler.
            drop(coop::spawn(async move {
                let (client, _) = listener.accept().await?;
                let mut data = [0; 1000];
                loop {
                    let n = client.read(&mut data).await?;
                    if n == 0 {
                        return io::Result::Ok(());
                    }
                    client.write_all(&[b"GOT:", &data[..n]].concat()).await?;
                }
            }));

            let stream = TcpStream::connect(addr).await?;
            let mut lines = BufReader::new(&stream).lines();
            let mut writer = &stream;
            let mut got = Vec::new();
            for line in ["Hello", "World"] {
                writer.write_all(format!("{line}\n").as_bytes()).await?;
                got.push(lines.next().await.expect("a reply line")?);
            }
            writer.close().await?;
            assert_eq!(got, ["GOT:Hello", "GOT:World"]);
            assert!(
                lines.next().await.is_none(),
                "EOF after the server's side closes"
            );
            io::Result::Ok(())
        })
        .unwrap();
    });
}

/// Any socket option, through the descriptor (here with socket2, as a user would).
#[test]
fn a_socket_option_is_set_through_the_descriptor() {
    bounded(LIMIT, || {
        coop::block_on(async {
            let (client, _server) = common::pair().await?;
            let socket = socket2::SockRef::from(&client);
            socket.set_keepalive(true)?;
            assert!(socket.keepalive()?);
            let listener = TcpListener::bind("127.0.0.1:0")?;
            assert!(socket2::SockRef::from(&listener).reuse_address()?);
            io::Result::Ok(())
        })
        .unwrap();
    });
}

/// Whether some epoll descriptor of this process watches `fd` (its `/proc` fdinfo lists
/// each watched descriptor as `tfd: N`).
fn in_an_epoll(fd: i32) -> bool {
    std::fs::read_dir("/proc/self/fdinfo")
        .unwrap()
        .any(|entry| {
            std::fs::read_to_string(entry.unwrap().path()).is_ok_and(|info| {
                info.lines().any(|line| {
                    line.strip_prefix("tfd:")
                        .and_then(|rest| rest.split_whitespace().next())
                        .is_some_and(|n| n == fd.to_string())
                })
            })
        })
}

/// `into_std` gives a socket back open and out of the runtime: it works as a blocking
/// std socket, and `from_std` takes it back (the OS poll let it go, so registering it
/// again is no `EEXIST`), on this runtime and the next.
#[test]
fn into_std_gives_a_socket_back_and_from_std_takes_it_again() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    bounded(LIMIT, || {
        let (std_client, std_listener, std_udp) = coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let client = TcpStream::connect(listener.local_addr()?).await?;
            let udp = coop::UdpSocket::bind("127.0.0.1:0")?;
            let fds = [client.as_raw_fd(), listener.as_raw_fd(), udp.as_raw_fd()];
            assert!(fds.iter().all(|&fd| in_an_epoll(fd)));
            let sockets = (client.into_std()?, listener.into_std()?, udp.into_std()?);
            assert_eq!(
                coop::stats().unwrap().sockets,
                0,
                "none left in the runtime"
            );
            for fd in fds {
                assert!(!in_an_epoll(fd), "fd {fd} is still in the OS poll");
            }
            io::Result::Ok(sockets)
        })
        .unwrap();

        // Plain std sockets now.
        let (mut server_side, _) = {
            std_listener.set_nonblocking(false).unwrap();
            std_listener.accept().unwrap()
        };
        std_client.set_nonblocking(false).unwrap();
        (&std_client).write_all(b"ping").unwrap();
        let mut got = [0; 4];
        server_side.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");

        // Back into a runtime, a new one.
        coop::block_on(async {
            let client = TcpStream::from_std(std_client)?;
            let listener = TcpListener::from_std(std_listener)?;
            let udp = coop::UdpSocket::from_std(std_udp)?;
            server_side.write_all(b"pong").unwrap();
            let mut reply = [0; 4];
            let mut reader = &client;
            reader.read_exact(&mut reply).await?;
            assert_eq!(&reply, b"pong");
            let again = TcpStream::connect(listener.local_addr()?).await?;
            let (accepted, _) = listener.accept().await?;
            again.write_all(b"x").await?;
            let mut x = [0; 1];
            accepted.read(&mut x).await?;
            assert_eq!(&x, b"x");
            udp.send_to(b"d", udp.local_addr()?).await?;
            let (n, _) = udp.recv_from(&mut [0; 4]).await?;
            assert_eq!(n, 1);
            io::Result::Ok(())
        })
        .unwrap();
    });
}
