//! `serve --unix PATH`: the socket file, bound and taken back.
//!
//! A Unix socket's file outlives its listener: after a crash it is still there, and a
//! plain bind then fails. A file nobody listens on (a connect is refused) is stale and
//! replaced; one a live server answers on is left alone, and so is anything that is not
//! a socket.

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// The socket file of a listener of ours: removed when dropped (at exit).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!("cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// Binds `path`, replacing a stale socket file. The error is one line for the user.
pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile), String> {
    let shown = path.display();
    let listener = match UnixListener::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let is_socket =
                std::fs::symlink_metadata(path).is_ok_and(|meta| meta.file_type().is_socket());
            if !is_socket {
                return Err(format!(
                    "cannot listen on {shown}: it exists and is not a socket"
                ));
            }
            match UnixStream::connect(path) {
                Ok(_) => {
                    return Err(format!(
                        "cannot listen on {shown}: a server is listening there"
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Stale: left by a listener that is gone.
                    tracing::debug!("replacing the stale socket file {shown}");
                    std::fs::remove_file(path)
                        .and_then(|()| UnixListener::bind(path))
                        .map_err(|e| format!("cannot listen on {shown}: {e}"))?
                }
                Err(e) => return Err(format!("cannot listen on {shown}: {e}")),
            }
        }
        bound => bound.map_err(|e| format!("cannot listen on {shown}: {e}"))?,
    };
    Ok((
        listener,
        SocketFile {
            path: path.to_path_buf(),
        },
    ))
}
