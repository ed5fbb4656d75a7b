//! Unix stream sockets: the echo, the futures-io traits, errors a caller sees, and a read
//! stopped at a write's boundary that must not wait for a new edge.

#![cfg(not(miri))]

mod common;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use common::{LIMIT, bounded};
use coop::net::{UnixListener, UnixStream};
use coop::time::timeout;
use futures::io::{AsyncReadExt, AsyncWriteExt};

/// A directory of its own for each test, removed when the test ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("coop-unix-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_unix_listener_echoes_four_mebibytes_through_futures_io() {
    let dir = TempDir::new("echo");
    let path = dir.0.join("echo.sock");
    bounded(LIMIT, move || {
        coop::block_on(async {
            let listener = UnixListener::bind(&path)?;
            assert_eq!(listener.local_addr()?.as_pathname(), Some(path.as_path()));
            let server = coop::spawn(async move {
                let (stream, _) = listener.accept().await?;
                futures::io::copy(&stream, &mut &stream).await
            });
            let client = std::rc::Rc::new(UnixStream::connect(&path).await?);
            let sent: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
            // One task writes while this one reads: the echo cannot wait for the end.
            let writer = coop::spawn({
                let sent = sent.clone();
                let client = std::rc::Rc::clone(&client);
                async move {
                    let mut writing: &UnixStream = &client;
                    AsyncWriteExt::write_all(&mut writing, &sent).await?;
                    writing.close().await
                }
            });
            let mut echoed = Vec::new();
            let mut reading: &UnixStream = &client;
            reading.read_to_end(&mut echoed).await?;
            writer.await??;
            assert!(
                echoed == sent,
                "the echo differs ({} bytes back)",
                echoed.len()
            );
            assert_eq!(server.await??, sent.len() as u64);
            io::Result::Ok(())
        })
        .unwrap();
    });
}

#[test]
fn connecting_to_no_listener_fails_at_once() {
    let dir = TempDir::new("refused");
    coop::block_on(async {
        let missing = UnixStream::connect(dir.0.join("nobody.sock"))
            .await
            .unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        // A socket file whose listener is gone.
        let stale = dir.0.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let refused = UnixStream::connect(&stale).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        // And binding over it is refused: the caller decides whether to remove it.
        assert_eq!(
            UnixListener::bind(&stale).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
    });
}

/// A write that carries a descriptor is read on its own: the read stops at its end with
/// the next write's bytes already queued, and no new edge comes for them. The next read
/// must still find them.
#[test]
fn data_queued_behind_a_write_with_a_descriptor_is_read() {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg};
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    bounded(LIMIT, || {
        coop::block_on(async {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
            let carried = std::fs::File::open("/dev/null")?;
            let fds = [carried.as_fd()];
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut ancillary = SendAncillaryBuffer::new(&mut space);
            assert!(ancillary.push(SendAncillaryMessage::ScmRights(&fds)));
            sendmsg(
                &theirs,
                &[IoSlice::new(b"hello")],
                &mut ancillary,
                SendFlags::empty(),
            )?;
            sendmsg(
                &theirs,
                &[IoSlice::new(b"world")],
                &mut SendAncillaryBuffer::default(),
                SendFlags::empty(),
            )?;
            let ours = UnixStream::from_std(ours)?;
            let mut got = Vec::new();
            let mut buf = [0; 64];
            while got.len() < 10 {
                let n = timeout(Duration::from_secs(10), ours.read(&mut buf))
                    .await
                    .map_err(|_| io::Error::other(format!("stuck after {got:?}")))??;
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"helloworld");
            io::Result::Ok(())
        })
        .unwrap();
    });
}

#[test]
fn a_pair_talks_and_sees_the_close() {
    coop::block_on(async {
        let (a, b) = UnixStream::pair().unwrap();
        a.write_all(b"ping").await.unwrap();
        let mut buf = [0; 8];
        let n = b.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"ping");
        drop(a);
        assert_eq!(b.read(&mut buf).await.unwrap(), 0);
    });
}
