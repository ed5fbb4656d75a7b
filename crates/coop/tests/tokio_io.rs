//! `--features tokio`: tokio's `AsyncRead` and `AsyncWrite` on coop's streams, driven by
//! tokio's own io helpers on a coop runtime (no tokio runtime anywhere). Built only with
//! the feature (`required-features` in Cargo.toml); CI runs it with
//! `cargo test -p coop --features tokio --test tokio_io`.

mod common;

use coop::net::{TcpListener, TcpStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An echo server of one `tokio::io::copy` passes 4 MiB exactly, then EOF once the client
/// shuts its side down (`poll_shutdown`).
#[test]
fn tokio_io_copy_echoes_every_byte() {
    const LEN: usize = 4 << 20;
    common::bounded(common::LIMIT, || {
        coop::block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = coop::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                let (mut reader, mut writer) = (&stream, &stream);
                let copied = tokio::io::copy(&mut reader, &mut writer).await.unwrap();
                AsyncWriteExt::shutdown(&mut writer).await.unwrap();
                copied
            });
            let client = TcpStream::connect(addr).await.unwrap();
            let payload: Vec<u8> = (0..LEN).map(|i| (i * 31 % 251) as u8).collect();
            let sending = {
                let payload = payload.clone();
                let mut writer = &client;
                async move {
                    // Called by their traits' names: coop's streams have inherent methods
                    // of the same names, which a method call would pick.
                    AsyncWriteExt::write_all(&mut writer, &payload)
                        .await
                        .unwrap();
                    AsyncWriteExt::shutdown(&mut writer).await.unwrap();
                }
            };
            let receiving = async {
                let mut echoed = Vec::new();
                AsyncReadExt::read_to_end(&mut &client, &mut echoed)
                    .await
                    .unwrap();
                echoed
            };
            let (_, echoed) = futures::join!(sending, receiving);
            assert_eq!(echoed.len(), LEN);
            assert!(echoed == payload);
            assert_eq!(server.await.unwrap(), LEN as u64);
        });
    });
}

/// The owned stream's impls: a write, a shutdown, and a read to the end, through tokio's
/// traits on a `TcpStream` itself.
#[test]
fn an_owned_stream_reads_and_writes_through_tokio_traits() {
    common::bounded(common::LIMIT, || {
        coop::block_on(async {
            let (mut client, mut server) = common::pair().await.unwrap();
            AsyncWriteExt::write_all(&mut client, b"ping")
                .await
                .unwrap();
            AsyncWriteExt::shutdown(&mut client).await.unwrap();
            let mut got = Vec::new();
            AsyncReadExt::read_to_end(&mut server, &mut got)
                .await
                .unwrap();
            assert_eq!(got, b"ping");
            AsyncWriteExt::write_all(&mut server, b"pong")
                .await
                .unwrap();
            drop(server);
            let mut back = Vec::new();
            AsyncReadExt::read_to_end(&mut client, &mut back)
                .await
                .unwrap();
            assert_eq!(back, b"pong");
        });
    });
}
