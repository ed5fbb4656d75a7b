//! Behind a real HAProxy (Debian's), run with `deploy/haproxy.cfg` as shipped: the
//! PROXY protocol in both versions, and health checks that stay out of the log.
//!
//! Skipped, with a note, where `haproxy` is missing; under `CI=true` that fails instead.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{IO_TIMEOUT, Server};

fn have_haproxy() -> bool {
    let found = Command::new("haproxy").arg("-v").output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "haproxy is missing, and CI must run this test"
        );
        eprintln!("skipped: no haproxy on this machine");
    }
    found
}

/// HAProxy running `deploy/haproxy.cfg` in front of two instances; killed when dropped.
struct Haproxy {
    child: Child,
    stats: PathBuf,
    frontend: SocketAddr,
    log: Arc<(Mutex<String>, Condvar)>,
}

impl Haproxy {
    /// Starts HAProxy (under `wrapper`, e.g. `ip netns exec lb`) with the shipped
    /// configuration, filled in through its environment variables.
    fn start(
        wrapper: &[&str],
        frontend: SocketAddr,
        backends: [SocketAddr; 2],
        send_proxy: &str,
        check_ms: u32,
    ) -> Haproxy {
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/haproxy.cfg");
        let stats = std::env::temp_dir().join(format!(
            "coop-haproxy-{}-{}.sock",
            std::process::id(),
            frontend.port()
        ));
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg("haproxy");
                command
            }
            None => Command::new("haproxy"),
        };
        let mut child = command
            .args(["-db", "-f", config])
            .env("ECHO_FRONTEND", frontend.to_string())
            .env("ECHO_A", backends[0].to_string())
            .env("ECHO_B", backends[1].to_string())
            .env("ECHO_PROXY", send_proxy)
            .env("ECHO_CHECK_MS", check_ms.to_string())
            .env("HAPROXY_STATS", &stats)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start haproxy");
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new((Mutex::new(String::new()), Condvar::new()));
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
        Haproxy {
            child,
            stats,
            frontend,
            log,
        }
    }

    /// Each server's status (`UP`, `DOWN`, ...), as the stats socket reports it.
    fn statuses(&self) -> Vec<(String, String)> {
        let Ok(mut socket) = UnixStream::connect(&self.stats) else {
            return Vec::new(); // not listening yet
        };
        socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        socket.write_all(b"show stat\n").unwrap();
        let mut csv = String::new();
        socket.read_to_string(&mut csv).unwrap();
        csv.lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(',').collect();
                let (server, status) = (fields.get(1)?, fields.get(17)?);
                (!matches!(*server, "FRONTEND" | "BACKEND"))
                    .then(|| (server.to_string(), status.to_string()))
            })
            .collect()
    }

    /// Waits (at most `IO_TIMEOUT`) until server `name` has `status`; when it was seen.
    fn wait_status(&mut self, name: &str, status: &str) -> Instant {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if self
                .statuses()
                .iter()
                .any(|(server, now)| server == name && now.starts_with(status))
            {
                return Instant::now();
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("haproxy exited ({exit}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "server {name} never {status}: {:?}; log:\n{}",
                self.statuses(),
                self.log()
            );
            thread::sleep(Duration::from_millis(10)); // polling the stats socket
        }
    }

    fn log(&self) -> String {
        self.log.0.lock().unwrap().clone()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stats);
    }
}

/// A free port on the loopback interface, for HAProxy's frontend (it cannot be told to
/// take any port and say which).
fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The seed's session through `frontend`; returns the client's own address.
fn seed_session(frontend: SocketAddr) -> SocketAddr {
    let mut client = TcpStream::connect(frontend).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for line in ["Hello\n", "World\n"] {
        client.write_all(line.as_bytes()).unwrap();
        let mut reply = vec![0; 4 + line.len()];
        client.read_exact(&mut reply).unwrap();
        assert_eq!(reply, format!("GOT:{line}").as_bytes());
    }
    client.local_addr().unwrap()
}

fn through_haproxy(send_proxy: &str) {
    if !have_haproxy() {
        return;
    }
    let instances = [
        Server::start(&["--proxy-protocol"]),
        Server::start(&["--proxy-protocol"]),
    ];
    let mut haproxy = Haproxy::start(
        &[],
        free_port(),
        [instances[0].addr, instances[1].addr],
        send_proxy,
        200,
    );
    haproxy.wait_status("a", "UP");
    haproxy.wait_status("b", "UP");
    for _ in 0..4 {
        let client = seed_session(haproxy.frontend);
        // The instance that served it names the client itself, not HAProxy.
        let line = format!("Connection from {client}");
        let deadline = Instant::now() + IO_TIMEOUT;
        while !instances.iter().any(|server| server.log().contains(&line)) {
            assert!(Instant::now() < deadline, "no instance logged {line:?}");
            thread::sleep(Duration::from_millis(10)); // polling two logs
        }
    }
}

/// Test 1: HAProxy with `send-proxy-v2`.
#[test]
fn the_seed_session_through_haproxy_with_proxy_v2() {
    through_haproxy("send-proxy-v2");
}

/// Test 2: the same with `send-proxy` (the text header).
#[test]
fn the_seed_session_through_haproxy_with_proxy_v1() {
    through_haproxy("send-proxy");
}

/// Test 4: checks every 200 ms keep both instances up, and none of them reaches the
/// instances' info-level log.
#[test]
fn health_checks_keep_instances_up_and_out_of_the_log() {
    if !have_haproxy() {
        return;
    }
    for send_proxy in ["send-proxy-v2", "send-proxy"] {
        let instances = [
            Server::start_with(&[], "127.0.0.1", 0, "debug", &["--proxy-protocol"]),
            Server::start_with(&[], "127.0.0.1", 0, "debug", &["--proxy-protocol"]),
        ];
        let mut haproxy = Haproxy::start(
            &[],
            free_port(),
            [instances[0].addr, instances[1].addr],
            send_proxy,
            200,
        );
        // Ten checks each: 2 s of them.
        for server in &instances {
            let deadline = Instant::now() + IO_TIMEOUT;
            while server.log().matches("Health check from").count() < 10 {
                assert!(Instant::now() < deadline, "log:\n{}", server.log());
                thread::sleep(Duration::from_millis(50)); // polling the log
            }
        }
        haproxy.wait_status("a", "UP");
        haproxy.wait_status("b", "UP");
        for server in &instances {
            let log = server.log();
            let loud: Vec<&str> = log
                .lines()
                .filter(|line| !line.contains("DEBUG") && !line.contains("TRACE"))
                .filter(|line| !line.contains("Listening on"))
                .collect();
            assert!(loud.is_empty(), "{send_proxy}: info-level lines: {loud:#?}");
        }
    }
}
