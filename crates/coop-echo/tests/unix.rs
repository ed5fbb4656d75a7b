//! `serve --unix PATH`: the echo on a Unix socket beside the TCP port; the socket file
//! removed at exit, a stale one replaced, a live one or a non-socket refused.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use common::{IO_TIMEOUT, Server, run};

/// A directory of the test's own, removed when it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("coop-echo-unix-{}-{name}", std::process::id()));
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

fn hello(path: &Path) -> String {
    let mut client = UnixStream::connect(path).expect("connect to the Unix socket");
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"Hello\n").unwrap();
    let mut reply = [0; 64];
    let n = client.read(&mut reply).unwrap();
    String::from_utf8_lossy(&reply[..n]).into_owned()
}

#[test]
fn the_echo_answers_on_a_unix_socket_and_its_file_goes_at_exit() {
    let dir = TempDir::new("echo");
    let path = dir.0.join("echo.sock");
    let mut server = Server::start(&["--unix", path.to_str().unwrap()]);
    server.wait_for_log(&format!("Listening on {} (unix)", path.display()));
    assert_eq!(hello(&path), "GOT:Hello\n");
    server.wait_for_log("Connection closed on");
    // The TCP port still serves beside it.
    let mut tcp = server.connect();
    tcp.write_all(b"Hi\n").unwrap();
    let mut reply = [0; 16];
    let n = tcp.read(&mut reply).unwrap();
    assert_eq!(&reply[..n], b"GOT:Hi\n");
    drop(tcp);
    server.signal("TERM");
    assert!(server.wait_exit(IO_TIMEOUT).success());
    assert!(!path.exists(), "the socket file is left behind");
}

/// A file left by a crashed run (nobody listens on it) is replaced.
#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TempDir::new("stale");
    let path = dir.0.join("echo.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let _server = Server::start(&["--unix", path.to_str().unwrap()]);
    assert_eq!(hello(&path), "GOT:Hello\n");
}

/// `coop-echo serve --unix PATH` that cannot start: its one line of stderr (exit 1).
fn refused(path: &Path) -> String {
    let args = ["serve", "--host", "127.0.0.1", "--port", "0", "--unix"];
    let output = run(&[&args[..], &[path.to_str().unwrap()]].concat(), b"");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr
}

/// A live server's socket, or a file that is no socket, is left alone: one line, exit 1.
#[test]
fn a_live_socket_or_another_file_is_refused() {
    let dir = TempDir::new("live");
    let path = dir.0.join("echo.sock");
    let _first = Server::start(&["--unix", path.to_str().unwrap()]);
    let stderr = refused(&path);
    assert!(stderr.contains("a server is listening there"), "{stderr}");
    assert_eq!(
        hello(&path),
        "GOT:Hello\n",
        "the first server lost its socket"
    );

    let file = dir.0.join("notes.txt");
    std::fs::write(&file, "keep me").unwrap();
    let stderr = refused(&file);
    assert!(stderr.contains("it exists and is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
}

/// The seed's session through a real client of Unix sockets: `nc -U`.
#[test]
fn the_seed_session_through_nc_on_the_unix_socket() {
    if !common::need("nc", "apt-get install netcat-openbsd") {
        return;
    }
    let dir = TempDir::new("nc");
    let path = dir.0.join("echo.sock");
    let _server = Server::start(&["--unix", path.to_str().unwrap()]);
    // -N: shut the socket down when stdin ends, then print what comes back until the
    // server closes.
    let mut nc = std::process::Command::new("nc")
        .args(["-N", "-U", path.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start nc");
    nc.stdin.take().unwrap().write_all(b"Hello\n").unwrap();
    let pid = nc.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(nc.wait_with_output()));
    let output = match rx.recv_timeout(IO_TIMEOUT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status();
            panic!("nc -U did not finish within {IO_TIMEOUT:?}");
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "nc: {stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "GOT:Hello\n");
}
