//! Runs the real `coop-echo` binary on a free loopback port, and talks to it.
#![allow(dead_code)] // each test file uses its own part of this

pub mod certs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long any single socket operation of a test may wait before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// For a test that cannot run here for want of `what`: fails under `CI=true`, and
/// otherwise says so where `cargo test` shows it, on the real stderr (`eprintln!` is
/// captured and shown only for failing tests). The harness has no "skipped" outcome, so
/// the test then returns and counts as passed; the note is what tells them apart.
pub fn skip_without(what: &str, install: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{what} is missing, and CI must run this test"
    );
    let note = format!("skipped: no {what} on this machine ({install})\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), note.as_bytes());
}

/// Whether the program `tool` is on `PATH`, looked up when the test runs (a lookup at
/// build time would have to rebuild whenever a folder on `PATH` changes); if not, says
/// so, as [`skip_without`] does, and returns false.
pub fn need(tool: &str, install: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(tool))));
    if !found {
        skip_without(tool, install);
    }
    found
}

fn is_executable(file: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    file.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this machine has the IPv6 loopback address; if not, says so, as
/// [`skip_without`] does, and returns false.
pub fn need_ipv6_loopback() -> bool {
    let found = std::net::TcpListener::bind("[::1]:0").is_ok();
    if !found {
        skip_without(
            "IPv6 loopback address (::1)",
            "sysctl net.ipv6.conf.lo.disable_ipv6=0",
        );
    }
    found
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_coop-echo")
}

/// `program`, run by `wrapper` if there is one (`prlimit --nofile=64`, `ip netns exec NS`).
pub fn command_under(wrapper: &[&str], program: &str) -> Command {
    match wrapper.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// A child's stderr, collected line by line as it comes, with a condition variable
/// notified at each line (for waiting on one).
pub type Log = Arc<(Mutex<String>, Condvar)>;

/// Starts collecting `child`'s stderr (which must be piped) into a [`Log`].
pub fn collect_stderr(child: &mut Child) -> Log {
    let stderr = child.stderr.take().expect("stderr is piped");
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let (text, changed) = &*sink;
            let mut text = text.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
            changed.notify_all();
        }
    });
    log
}

/// Runs `coop-echo ARGS` with `input` on stdin; its output, once it exits (at most
/// `IO_TIMEOUT`).
pub fn run(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(binary())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start coop-echo");
    // A program that gave up (nobody listens) may have closed its stdin already.
    let _ = child.stdin.take().expect("stdin is piped").write_all(input);
    let pid = child.id().to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(IO_TIMEOUT) {
        Ok(output) => output.expect("coop-echo's output"),
        Err(_) => {
            // Not left running after the test: it is ours, by its id.
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("coop-echo {args:?} did not exit within {IO_TIMEOUT:?}");
        }
    }
}

/// A running server, killed when dropped.
pub struct Server {
    child: Option<Child>,
    pid: u32,
    pub addr: SocketAddr,
    log: Log,
}

impl Server {
    /// Starts `coop-echo serve --host 127.0.0.1 --port 0 ARGS` and waits for its
    /// `Listening on` line.
    pub fn start(args: &[&str]) -> Server {
        Server::start_under(&[], args)
    }

    /// As `start`, with the command run by `wrapper` (e.g. `prlimit --nofile=64`).
    pub fn start_under(wrapper: &[&str], args: &[&str]) -> Server {
        Server::start_with(wrapper, "127.0.0.1", 0, "info", args)
    }

    /// As `start`, listening on `host` (a loopback address) instead of 127.0.0.1.
    pub fn start_on(host: &str, args: &[&str]) -> Server {
        Server::start_with(&[], host, 0, "info", args)
    }

    /// `wrapper coop-echo serve --host HOST --port PORT ARGS`, logging at `level`.
    pub fn start_with(
        wrapper: &[&str],
        host: &str,
        port: u16,
        level: &str,
        args: &[&str],
    ) -> Server {
        let mut child = command_under(wrapper, binary())
            .args(["serve", "--host", host, "--port", &port.to_string()])
            .args(args)
            .env("RUST_LOG", level)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start coop-echo");
        let log = collect_stderr(&mut child);
        let pid = child.id();
        let mut server = Server {
            child: Some(child),
            pid,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let line = server.wait_for_log("Listening on ");
        let addr = line.split_once("Listening on ").unwrap().1.trim();
        server.addr = addr.parse().expect("a socket address after 'Listening on'");
        server
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A connected client with bounded reads and writes.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect to coop-echo");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }

    /// Waits (at most `IO_TIMEOUT`) for a log line containing `needle`, and returns it.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let has = |log: &str| log.lines().any(|l| l.contains(needle));
        let log = self.wait_until(&format!("a log line with {needle:?}"), has);
        let line = log.lines().find(|l| l.contains(needle));
        line.unwrap_or_default().to_string()
    }

    /// Waits (at most `IO_TIMEOUT`) until the log so far satisfies `done`, and returns it;
    /// `what` says what was waited for if it never does.
    pub fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let (text, changed) = &*self.log;
        let deadline = Instant::now() + IO_TIMEOUT;
        let mut text = text.lock().unwrap();
        loop {
            if done(&text) {
                return text.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "never came: {what}; log:\n{text}");
            text = changed.wait_timeout(text, left).unwrap().0;
        }
    }

    /// The `--http` listener's address, from its `Listening on http(s)://ADDR (...)` line.
    pub fn http_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("(HTTP/1.1, HTTP/2, WebSocket)");
        line.split("://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    /// The `--admin` address, from the server's `Metrics at` line.
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("Metrics at http://");
        let rest = line
            .split("http://")
            .nth(1)
            .expect("an address after http://");
        rest.trim_end_matches("/metrics").trim().parse().unwrap()
    }

    /// Resident memory, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Connections the kernel has completed for the listening sockets (one per thread)
    /// and the server has not accepted yet (their accept queues), as `/proc/net/tcp`
    /// shows them: for a socket in LISTEN, the receive-queue column counts them.
    pub fn accept_queue(&self) -> usize {
        let port = format!(":{:04X}", self.addr.port());
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let queues: Vec<usize> = table
            .lines()
            .skip(1)
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
            .filter(|cols| cols[1].ends_with(&port) && cols[3] == "0A")
            .map(|row| {
                let queue = row[4].split(':').nth(1).expect("tx_queue:rx_queue");
                usize::from_str_radix(queue, 16).unwrap()
            })
            .collect();
        assert!(!queues.is_empty(), "no listening socket in /proc/net/tcp");
        queues.iter().sum()
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .unwrap()
            .count()
    }

    /// CPU time the server has used (all its threads), from the scheduler's accounting.
    pub fn cpu(&self) -> Duration {
        let mut total = 0;
        for task in std::fs::read_dir(format!("/proc/{}/task", self.pid())).unwrap() {
            let stat = std::fs::read_to_string(task.unwrap().path().join("schedstat")).unwrap();
            total += stat
                .split_whitespace()
                .next()
                .unwrap()
                .parse::<u64>()
                .unwrap();
        }
        Duration::from_nanos(total)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().unwrap().is_none(),
            None => false,
        }
    }

    /// Sends `signal` (e.g. "TERM") to the server.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits at most `limit` for the server to exit, and returns its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("still running");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let status = child.wait();
            let _ = tx.send((status, child));
        });
        match rx.recv_timeout(limit) {
            Ok((status, _)) => status.unwrap(),
            Err(_) => panic!(
                "coop-echo did not exit within {limit:?}; log:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A client's pings for 2 s, each answered, at a client's pace (one every 100 ms); the
/// server's CPU time over them, as a share of one core.
pub fn cpu_share_while_pinging(server: &Server, client: &mut TcpStream) -> f64 {
    let cpu = server.cpu();
    let window = Instant::now();
    while window.elapsed() < Duration::from_secs(2) {
        assert_eq!(round_trip(client, b"ping\n", 9), b"GOT:ping\n");
        thread::sleep(Duration::from_millis(100)); // the client's pace
    }
    let used = server.cpu() - cpu;
    let share = used.as_secs_f64() / window.elapsed().as_secs_f64();
    eprintln!(
        "CPU while out of fds: {used:?} over {:?} ({:.2}%)",
        window.elapsed(),
        share * 100.0
    );
    share
}

/// Clients that each sent one message, split into those answered already (their reply
/// read into `reply`) and those still waiting; all left non-blocking.
pub fn answered_or_waiting(
    clients: Vec<TcpStream>,
    reply: &mut [u8],
) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let (mut answered, mut waiting) = (Vec::new(), Vec::new());
    for mut client in clients {
        client.set_nonblocking(true).unwrap();
        match client.read(reply) {
            Ok(_) => answered.push(client),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => waiting.push(client),
            Err(e) => panic!("{e}"),
        }
    }
    (answered, waiting)
}

/// Sends `payload`, then reads until `expected_len` bytes came back.
pub fn round_trip(stream: &mut TcpStream, payload: &[u8], expected_len: usize) -> Vec<u8> {
    stream.write_all(payload).unwrap();
    let mut reply = vec![0; expected_len];
    stream.read_exact(&mut reply).unwrap();
    reply
}

/// Writes `payload` from a second thread while this one reads, then half-closes and reads
/// to EOF: what a client that streams through the server sees.
pub fn stream_through(server: &Server, payload: Arc<Vec<u8>>) -> Vec<u8> {
    let mut stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        for piece in payload.chunks(64 * 1024) {
            writer.write_all(piece).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    sender.join().unwrap();
    reply
}

/// Deterministic bytes (xorshift), for payloads that must not repeat.
pub fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    seed |= 1;
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

/// The reply `--framing line` gives: `prefix` before every line.
pub fn prefix_lines(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() * 2);
    let mut line_start = true;
    for &b in payload {
        if line_start {
            out.extend_from_slice(prefix);
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

/// A raw WebSocket: the handshake by hand, so that frames can be anything.
pub fn raw_websocket(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed in the handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // RFC 6455's own example key and answer.
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    stream
}

/// One HTTP exchange with the admin address: the status line and the body.
pub fn http(addr: SocketAddr, request: &[u8]) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let _ = stream.write_all(request);
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The value of metric `name` in a `/metrics` body.
pub fn metric<T: std::str::FromStr>(body: &str, name: &str) -> T {
    let value = body
        .lines()
        .find_map(|line| line.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{body}"))
        .trim();
    value
        .parse()
        .unwrap_or_else(|_| panic!("{name} is {value:?}, not a number of its kind"))
}

/// `clients` clients, all connected before any talks (so all are open at once), each
/// doing `round_trips` round trips of its own message, each reply checked: on one coop
/// thread, bounded to two minutes. Returns the replies checked.
pub fn clients_at_once(addr: SocketAddr, clients: usize, round_trips: usize) -> usize {
    use std::rc::Rc;
    let outcome = coop::block_on(coop::time::timeout(Duration::from_secs(120), async move {
        let mut streams = Vec::with_capacity(clients);
        for _ in 0..clients {
            streams.push(Rc::new(coop::TcpStream::connect(addr).await?));
        }
        let talking: Vec<_> = streams
            .iter()
            .enumerate()
            .map(|(i, stream)| coop::spawn(talk(i, Rc::clone(stream), round_trips)))
            .collect();
        let mut replies = 0;
        for client in talking {
            replies += client.await??;
        }
        std::io::Result::Ok(replies)
    }));
    outcome
        .expect("done within the time limit")
        .expect("no client failed")
}

/// One client's round trips, each message its own, each reply checked.
async fn talk(
    client: usize,
    stream: std::rc::Rc<coop::TcpStream>,
    round_trips: usize,
) -> std::io::Result<usize> {
    let mut checked = 0;
    for round in 0..round_trips {
        let message = format!("client {client} says {round}\n");
        stream.write_all(message.as_bytes()).await?;
        let expected = format!("GOT:{message}");
        let mut reply = vec![0; expected.len()];
        let mut got = 0;
        while got < reply.len() {
            match stream.read(&mut reply[got..]).await? {
                0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        assert_eq!(String::from_utf8_lossy(&reply), expected);
        checked += 1;
    }
    Ok(checked)
}

/// Runs `coop-echo bench --host 127.0.0.1 --port PORT -q ARGS` against `server`,
/// bounded in time.
pub fn bench(server: &Server, args: &[&str]) -> std::process::Output {
    let port = server.addr.port().to_string();
    let mut all = vec!["bench", "--host", "127.0.0.1", "-q", "--port", &port];
    all.extend_from_slice(args);
    run(&all, b"")
}

/// The `--json` report of a bench run that succeeded (a failed one fails the test,
/// showing its output).
pub fn json_report(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).expect("a JSON report")
}
