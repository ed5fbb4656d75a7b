//! Behind a real HAProxy (Debian's), run with `deploy/haproxy.cfg` as shipped: the
//! PROXY protocol in both versions, and health checks that stay out of the log.
//!
//! Skipped, with a note, where `haproxy` is missing; under `CI=true` that fails instead.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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
    log: common::Log,
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
        Haproxy::start_with(
            "haproxy.cfg",
            wrapper,
            frontend,
            backends,
            send_proxy,
            check_ms,
        )
    }

    /// As `start`, with `deploy/CONFIG` (or CONFIG itself, an absolute path: a test's
    /// own file).
    fn start_with(
        config: &str,
        wrapper: &[&str],
        frontend: SocketAddr,
        backends: [SocketAddr; 2],
        send_proxy: &str,
        check_ms: u32,
    ) -> Haproxy {
        let config = if config.starts_with('/') {
            config.to_string()
        } else {
            format!("{}/../../deploy/{config}", env!("CARGO_MANIFEST_DIR"))
        };
        let stats = std::env::temp_dir().join(format!(
            "coop-haproxy-{}-{}.sock",
            std::process::id(),
            frontend.port()
        ));
        let mut child = common::command_under(wrapper, "haproxy")
            .args(["-db", "-f", &config])
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
        let log = common::collect_stderr(&mut child);
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

/// Clients that keep connecting through a load balancer, `threads` at a time, each
/// thread one client after another (client `n` of thread `t` is given `t * 1,000,000 +
/// n`, from 1 to `per_thread`), until stopped; what each client got, in the order they
/// ended.
struct Crowd<T> {
    stop: Arc<std::sync::atomic::AtomicBool>,
    outcomes: Arc<Mutex<Vec<T>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl<T: Send + 'static> Crowd<T> {
    fn start(
        threads: u64,
        per_thread: u64,
        client: impl Fn(u64) -> T + Send + Clone + 'static,
    ) -> Crowd<T> {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|t| {
                let (stop, outcomes, client) =
                    (Arc::clone(&stop), Arc::clone(&outcomes), client.clone());
                thread::spawn(move || {
                    for n in 1..=per_thread {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        let outcome = client(t * 1_000_000 + n);
                        outcomes.lock().unwrap().push(outcome);
                    }
                })
            })
            .collect();
        Crowd {
            stop,
            outcomes,
            threads,
        }
    }

    /// Clients that have ended so far.
    fn count(&self) -> usize {
        self.outcomes.lock().unwrap().len()
    }

    /// Waits (at most `IO_TIMEOUT`) until `n` clients have ended.
    fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + IO_TIMEOUT;
        while self.count() < n {
            assert!(Instant::now() < deadline, "only {} clients", self.count());
            thread::sleep(Duration::from_millis(10)); // polling the clients' tally
        }
    }

    /// Stops them (each thread after its client in flight), and gives what they got.
    fn stop(self) -> Vec<T> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        std::mem::take(&mut *self.outcomes.lock().unwrap())
    }
}

/// HAProxy on a free loopback port in front of `instances`, checking every 200 ms, once
/// it has seen both up.
fn in_front_of(instances: &[Server; 2], send_proxy: &str) -> Haproxy {
    let mut haproxy = Haproxy::start(
        &[],
        free_port(),
        [instances[0].addr, instances[1].addr],
        send_proxy,
        200,
    );
    haproxy.wait_status("a", "UP");
    haproxy.wait_status("b", "UP");
    haproxy
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

/// Which instance logged `Connection from CLIENT` (waiting for the line, at most
/// `IO_TIMEOUT`).
fn served_by(instances: &[Server], client: SocketAddr) -> usize {
    let line = format!("Connection from {client}\n");
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(at) = instances.iter().position(|s| s.log().contains(&line)) {
            return at;
        }
        assert!(Instant::now() < deadline, "no instance logged {line:?}");
        thread::sleep(Duration::from_millis(10)); // polling the logs
    }
}

fn through_haproxy(send_proxy: &str) {
    if !have_haproxy() {
        return;
    }
    let instances = [
        Server::start(&["--proxy-protocol"]),
        Server::start(&["--proxy-protocol"]),
    ];
    let haproxy = in_front_of(&instances, send_proxy);
    for _ in 0..4 {
        // The instance that served it names the client itself, not HAProxy.
        served_by(&instances, seed_session(haproxy.frontend));
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
        let mut haproxy = in_front_of(&instances, send_proxy);
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

/// An instance stopped with SIGTERM behind HAProxy: its port closes, clients sent there
/// before HAProxy notices are retried on the other, HAProxy marks it down, and the
/// connection it still has is served to the end (the configuration keeps a down
/// server's connections).
#[test]
fn a_stopping_instance_drains_behind_haproxy() {
    if !have_haproxy() {
        return;
    }
    let args = ["--proxy-protocol", "--shutdown-timeout", "20"];
    let mut instances = [Server::start(&args), Server::start(&args)];
    let mut haproxy = in_front_of(&instances, "send-proxy-v2");

    let mut open = TcpStream::connect(haproxy.frontend).unwrap();
    open.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(common::round_trip(&mut open, b"one\n", 8), b"GOT:one\n");
    let serving = served_by(&instances, open.local_addr().unwrap());
    let (name, other) = if serving == 0 { ("a", 1) } else { ("b", 0) };

    // Load the other instance with more open connections, so that HAProxy (least
    // connections first) picks the stopping one for the next clients.
    let mut held = Vec::new();
    let mut lead = 0i32;
    while lead < 1 {
        let mut client = TcpStream::connect(haproxy.frontend).unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        assert_eq!(common::round_trip(&mut client, b"hold\n", 9), b"GOT:hold\n");
        lead += if served_by(&instances, client.local_addr().unwrap()) == other {
            1
        } else {
            -1
        };
        held.push(client);
        assert!(held.len() < 50, "HAProxy never loaded the other instance");
    }

    instances[serving].signal("TERM");
    // Before HAProxy has marked it down, the clients it sends there are refused by the
    // closed port, and retried on the other instance: none is lost.
    instances[serving].wait_for_log("SIGTERM: stopped accepting");
    for _ in 0..3 {
        let client = seed_session(haproxy.frontend);
        assert_eq!(served_by(&instances, client), other);
    }
    haproxy.wait_status(name, "DOWN");
    // Marked down, and still answering its open connection.
    assert_eq!(common::round_trip(&mut open, b"two\n", 8), b"GOT:two\n");
    // Everyone new goes to the other instance.
    let client = seed_session(haproxy.frontend);
    instances[other].wait_for_log(&format!("Connection from {client}"));
    // The drained connections end when their clients leave, and so does the instance.
    drop(open);
    drop(held);
    assert!(instances[serving].wait_exit(IO_TIMEOUT).success());
}

/// Hosts made for one test: network namespaces joined by veth pairs, removed (with
/// their links) when dropped, whatever happened.
struct Hosts {
    names: Vec<String>,
    /// Links of this host's end: a namespace outlives its deletion while sockets in it
    /// wait out TIME_WAIT, and so would its links, and their routes.
    links: Vec<String>,
}

impl Hosts {
    fn add(&mut self, name: &str) {
        ip(&["netns", "add", name]);
        self.names.push(name.to_string());
        ip(&["-n", name, "link", "set", "lo", "up"]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).status();
        }
        for name in &self.names {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `a` in namespace `ns_a` (None: this one) linked to `b` in `ns_b`, with addresses.
fn link(ns_a: Option<&str>, a: &str, addr_a: &str, ns_b: &str, b: &str, addr_b: &str) {
    let mut on_a: Vec<&str> = ns_a.map_or(vec![], |ns| vec!["-n", ns]);
    let mut add = on_a.clone();
    add.extend([
        "link", "add", a, "type", "veth", "peer", "name", b, "netns", ns_b,
    ]);
    ip(&add);
    let mut address = on_a.clone();
    address.extend(["addr", "add", addr_a, "dev", a]);
    ip(&address);
    on_a.extend(["link", "set", a, "up"]);
    ip(&on_a);
    ip(&["-n", ns_b, "addr", "add", addr_b, "dev", b]);
    ip(&["-n", ns_b, "link", "set", b, "up"]);
}

fn can_make_hosts() -> bool {
    let root = rustix::process::geteuid().is_root();
    let ip_found = Command::new("ip").arg("-V").output().is_ok();
    if !(root && ip_found) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "network namespaces need root and ip (iproute2), and CI must run this test"
        );
        eprintln!("skipped: network namespaces need root and ip");
    }
    root && ip_found
}

/// What one client connection saw.
struct Outcome {
    port: u16,
    started: Instant,
    /// Bytes sent and echoed back intact, or why not.
    result: Result<usize, String>,
}

/// How long a client of the fail-over test waits on a silent connection.
const GIVE_UP: Duration = Duration::from_secs(5);

/// One connection: 64 KiB of lines out, each line back behind its `GOT:`, every byte
/// compared.
fn echo_64k(frontend: SocketAddr, seed: u64) -> Outcome {
    let started = Instant::now();
    let payload = common::pseudo_random(64 * 1024, seed);
    let mut port = 0;
    let result = (|| -> std::io::Result<usize> {
        let mut stream = TcpStream::connect_timeout(&frontend, IO_TIMEOUT)?;
        port = stream.local_addr()?.port();
        // A connection to the host that is cut off hangs (an instance marked down keeps
        // its connections): it is given up after this long. One to the other host takes
        // milliseconds.
        stream.set_read_timeout(Some(GIVE_UP))?;
        stream.set_write_timeout(Some(GIVE_UP))?;
        let mut writer = stream.try_clone()?;
        let sent = payload.clone();
        let sender = thread::spawn(move || writer.write_all(&sent));
        let expected = common::prefix_lines(b"GOT:", &payload);
        let mut back = vec![0; expected.len()];
        let read = stream.read_exact(&mut back);
        let written = sender
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the writing thread panicked")));
        written?;
        read?;
        if back != expected {
            return Err(std::io::Error::other("the echo differs"));
        }
        Ok(payload.len())
    })()
    .map_err(|e| e.to_string());
    Outcome {
        port,
        started,
        result,
    }
}

/// Test 5: instances on two hosts, HAProxy on a third, clients on this one. One
/// instance's host is cut off mid-run: HAProxy marks it down, every later client is
/// served by the other, and every connection the other served is intact.
#[test]
fn a_host_cut_off_mid_run_is_taken_out_and_the_other_serves_everyone() {
    if !have_haproxy() || !can_make_hosts() {
        return;
    }
    let tag = std::process::id() % 100_000;
    let (lb, h1, h2) = (
        format!("cooplb{tag}"),
        format!("cooph1{tag}"),
        format!("cooph2{tag}"),
    );
    let mut hosts = Hosts {
        names: Vec::new(),
        links: Vec::new(),
    };
    for name in [&lb, &h1, &h2] {
        hosts.add(name);
    }
    // This host 10.201.0.1 -- 10.201.0.2 load balancer 10.201.1.1 -- 10.201.1.2 host 1
    //                                                  10.201.2.1 -- 10.201.2.2 host 2
    hosts.links.push(format!("cr{tag}"));
    link(
        None,
        &format!("cr{tag}"),
        "10.201.0.1/24",
        &lb,
        "up0",
        "10.201.0.2/24",
    );
    link(
        Some(&lb),
        "to1",
        "10.201.1.1/24",
        &h1,
        "eth1",
        "10.201.1.2/24",
    );
    link(
        Some(&lb),
        "to2",
        "10.201.2.1/24",
        &h2,
        "eth2",
        "10.201.2.2/24",
    );

    let on = |ns: &str| ["ip", "netns", "exec", ns].map(str::to_string);
    let instance = |ns: &str, host: &str| {
        let wrapper = on(ns);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        Server::start_with(
            &wrapper,
            host,
            25000,
            "info",
            &["--proxy-protocol", "--framing", "line"],
        )
    };
    let one = instance(&h1, "10.201.1.2");
    let two = instance(&h2, "10.201.2.2");
    let wrapper = on(&lb);
    let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
    let check_ms = 200;
    let mut haproxy = Haproxy::start(
        &wrapper,
        "10.201.0.2:25000".parse().unwrap(),
        [one.addr, two.addr],
        "send-proxy-v2",
        check_ms,
    );
    haproxy.wait_status("a", "UP");
    haproxy.wait_status("b", "UP");

    // Clients keep connecting, four at a time, until told to stop.
    let frontend = haproxy.frontend;
    let crowd = Crowd::start(4, 2000, move |seed| echo_64k(frontend, seed));
    crowd.wait_for(40);

    let cut = Instant::now();
    ip(&["-n", &lb, "link", "set", "to1", "down"]);
    let down = haproxy.wait_status("a", "DOWN");
    crowd.wait_for(crowd.count() + 100);
    let outcomes = crowd.stop();

    let served_by = |server: &Server, port: u16| {
        server
            .log()
            .contains(&format!("Connection from 10.201.0.1:{port}\n"))
    };
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.started > down).collect();
    for o in &after {
        assert_eq!(
            o.result,
            Ok(64 * 1024),
            "a client after the cut: port {}; haproxy: {:?}; host 2: {:?}; haproxy log: {}",
            o.port,
            haproxy
                .log()
                .lines()
                .filter(|l| l.contains(&format!(":{}", o.port)))
                .collect::<Vec<_>>(),
            two.log()
                .lines()
                .filter(|l| l.contains(&format!(":{}", o.port)))
                .collect::<Vec<_>>(),
            haproxy
                .log()
                .lines()
                .filter(|l| !l.starts_with("<6>"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            served_by(&two, o.port),
            "port {} not served by host 2",
            o.port
        );
    }
    let mut verified = 0;
    for o in outcomes
        .iter()
        .filter(|o| o.port != 0 && served_by(&two, o.port))
    {
        assert_eq!(
            o.result,
            Ok(64 * 1024),
            "host 2's connection from port {}",
            o.port
        );
        verified += 64 * 1024;
    }
    let one_served = outcomes.iter().filter(|o| served_by(&one, o.port)).count();
    eprintln!(
        "fail-over: marked down {:?} after the cut (checks every {check_ms} ms, fall 2); \
         {} connections, {one_served} on host 1 before the cut; {} after the mark, all on \
         host 2; {} KiB verified on host 2",
        down - cut,
        outcomes.len(),
        after.len(),
        verified / 1024
    );
    assert!(one_served > 0, "host 1 served no one before the cut");
    // Two failed checks, 200 ms apart, and the first may start up to one interval late.
    assert!(
        down - cut < Duration::from_millis(u64::from(check_ms) * 10),
        "marked down only {:?} after the cut",
        down - cut
    );
    drop(haproxy);
    drop(one);
    drop(two);
    drop(hosts);
}

/// `deploy/haproxy-http.cfg`: HAProxy in HTTP mode in front of two `--http` listeners.
/// Requests are spread over both (each JSON names its instance), each names the client
/// from the PROXY header and HAProxy's `X-Forwarded-For`, a WebSocket is echoed through,
/// and the HTTP checks stay out of the instances' info-level log.
#[test]
fn http_and_websocket_through_haproxy_in_http_mode() {
    if !have_haproxy() {
        return;
    }
    let start = |name: &str| {
        let server = Server::start(&["--proxy-protocol", "--http", "0", "--instance", name]);
        let addr = server.http_addr();
        (server, addr)
    };
    let (a, a_http) = start("a");
    let (b, b_http) = start("b");
    let mut haproxy = Haproxy::start_with(
        "haproxy-http.cfg",
        &[],
        free_port(),
        [a_http, b_http],
        "send-proxy-v2",
        200,
    );
    haproxy.wait_status("a", "UP");
    haproxy.wait_status("b", "UP");
    let mut instances = std::collections::BTreeSet::new();
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = TcpStream::connect(haproxy.frontend).unwrap();
        client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let me = client.local_addr().unwrap();
        clients.push(me);
        client
            .write_all(b"GET /who?x=1 HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        client.read_to_string(&mut response).unwrap();
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let json: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
        assert_eq!(json["client"], me.to_string(), "{json}");
        let forwarded = serde_json::json!(["x-forwarded-for", me.ip().to_string()]);
        assert!(
            json["headers"].as_array().unwrap().contains(&forwarded),
            "{json}"
        );
        instances.insert(json["server"]["instance"].as_str().unwrap().to_string());
    }
    assert_eq!(instances.len(), 2, "round robin reached {instances:?}");

    // A WebSocket, upgraded through HAProxy, then a tunnel.
    let mut ws = common::raw_websocket(haproxy.frontend);
    // A masked text frame "hi" (mask 0), and its echo, unmasked.
    ws.write_all(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']).unwrap();
    let mut echo = [0; 4];
    ws.read_exact(&mut echo).unwrap();
    assert_eq!(echo, [0x81, 2, b'h', b'i']);

    clients.push(ws.local_addr().unwrap());
    // Every connection logged at info is one of ours: HAProxy's checks (one each 200 ms)
    // are logged at debug level.
    for server in [&a, &b] {
        for line in server
            .log()
            .lines()
            .filter(|l| l.contains("Connection from"))
        {
            assert!(
                clients
                    .iter()
                    .any(|c| line.contains(&format!("Connection from {c} "))),
                "not a client of ours: {line}"
            );
        }
    }
}

/// A test's own HAProxy configuration, in a file of its own (removed when dropped), for
/// what the shipped files do not show.
struct OwnConfig(PathBuf);

impl OwnConfig {
    fn new(name: &str, text: &str) -> OwnConfig {
        let path =
            std::env::temp_dir().join(format!("coop-haproxy-{}-{name}.cfg", std::process::id()));
        std::fs::write(&path, text).unwrap();
        OwnConfig(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a temporary path in UTF-8")
    }
}

impl Drop for OwnConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The most common configuration there is: a plain `check` (HAProxy only connects, then
/// resets) with `check-send-proxy`, and no `tcp-check` rules.
const PLAIN_CHECK: &str = r#"
global
    stats socket "${HAPROXY_STATS}" mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
frontend echo
    bind "${ECHO_FRONTEND}"
    default_backend coop_echo
backend coop_echo
    default-server "${ECHO_PROXY}" check check-send-proxy inter "${ECHO_CHECK_MS}" fall 2 rise 1
    server a "${ECHO_A}"
    server b "${ECHO_B}"
"#;

/// HAProxy's plain checks, v1 and v2: a header (v1 naming the check's own connection, v2
/// LOCAL) and a reset at once, which may come before the instance reads the header. Each
/// is a probe, logged at debug level only, whatever the order.
#[test]
fn plain_checks_with_a_header_stay_out_of_the_log() {
    if !have_haproxy() {
        return;
    }
    let config = OwnConfig::new("plain-check", PLAIN_CHECK);
    for send_proxy in ["send-proxy", "send-proxy-v2"] {
        let instances = [
            Server::start_with(&[], "127.0.0.1", 0, "debug", &["--proxy-protocol"]),
            Server::start_with(&[], "127.0.0.1", 0, "debug", &["--proxy-protocol"]),
        ];
        let mut haproxy = Haproxy::start_with(
            config.path(),
            &[],
            free_port(),
            [instances[0].addr, instances[1].addr],
            send_proxy,
            50,
        );
        haproxy.wait_status("a", "UP");
        haproxy.wait_status("b", "UP");
        // Thirty checks each (a second and a half of them), whatever each is logged as.
        for server in &instances {
            server.wait_until("thirty checks", |log| {
                log.lines()
                    .filter(|l| l.contains("Health check from") || l.contains("Connection from"))
                    .filter(|l| !l.contains(" ended") && !l.contains(" closed"))
                    .count()
                    >= 30
            });
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

/// HAProxy checking each instance's `/healthz` (on its admin port), as DEPLOY.md shows,
/// and with no second chance for a client sent to a closed port (`retries 0`, no
/// redispatch): only the shutdown delay keeps clients from being refused.
const HEALTHZ_CHECK: &str = r#"
global
    stats socket "${HAPROXY_STATS}" mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    retries 0
frontend echo
    bind "${ECHO_FRONTEND}"
    default_backend coop_echo
backend coop_echo
    balance roundrobin
    option httpchk GET /healthz
    http-check expect status 200
    default-server "${ECHO_PROXY}" inter "${ECHO_CHECK_MS}" fall 2 rise 1
    server a "${ECHO_A}" check port ADMIN_A
    server b "${ECHO_B}" check port ADMIN_B
"#;

/// What one client of the stop test saw.
struct Tried {
    started: Instant,
    client: SocketAddr,
    result: Result<(), String>,
}

/// One client through `frontend`: a line, and its echo.
fn one_echo(frontend: SocketAddr, n: u64) -> Tried {
    let started = Instant::now();
    let mut client: SocketAddr = ([0, 0, 0, 0], 0).into();
    let result = (|| -> std::io::Result<()> {
        let mut stream = TcpStream::connect_timeout(&frontend, IO_TIMEOUT)?;
        client = stream.local_addr()?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let line = format!("echo {n}\n");
        stream.write_all(line.as_bytes())?;
        let mut reply = vec![0; 4 + line.len()];
        stream.read_exact(&mut reply)?;
        if reply != format!("GOT:{line}").as_bytes() {
            return Err(std::io::Error::other("the echo differs"));
        }
        Ok(())
    })()
    .map_err(|e| e.to_string());
    Tried {
        started,
        client,
        result,
    }
}

/// `--shutdown-delay` behind HAProxy: on SIGTERM `/healthz` turns 503 and the instance
/// goes on accepting and serving for the delay (longer than HAProxy's two failed checks),
/// so HAProxy takes it out before its port closes: of clients connecting all through the
/// stop, none is refused, and the stopping instance served some of them meanwhile.
#[test]
fn a_shutdown_delay_lets_haproxy_take_an_instance_out_before_its_port_closes() {
    if !have_haproxy() {
        return;
    }
    let args = [
        "--proxy-protocol",
        "--admin",
        "0",
        "--shutdown-delay",
        "2",
        "--shutdown-timeout",
        "5",
    ];
    let mut instances = [Server::start(&args), Server::start(&args)];
    let text = HEALTHZ_CHECK
        .replace("ADMIN_A", &instances[0].admin_addr().port().to_string())
        .replace("ADMIN_B", &instances[1].admin_addr().port().to_string());
    let config = OwnConfig::new("healthz", &text);
    let check_ms = 100;
    let mut haproxy = Haproxy::start_with(
        config.path(),
        &[],
        free_port(),
        [instances[0].addr, instances[1].addr],
        "send-proxy-v2",
        check_ms,
    );
    haproxy.wait_status("a", "UP");
    haproxy.wait_status("b", "UP");

    // Clients connect continuously, two at a time, until told to stop.
    let frontend = haproxy.frontend;
    let crowd = Crowd::start(2, 999_999, move |n| one_echo(frontend, n));
    crowd.wait_for(20);

    let signalled = Instant::now();
    instances[0].signal("TERM");
    instances[0].wait_for_log("SIGTERM: still accepting for 2 s (--shutdown-delay)");
    let down = haproxy.wait_status("a", "DOWN");
    assert!(
        !instances[0].log().contains("stopped accepting"),
        "the port closed before HAProxy took the instance out"
    );
    instances[0].wait_for_log("stopped accepting");
    assert!(instances[0].wait_exit(IO_TIMEOUT).success());
    crowd.wait_for(crowd.count() + 20);
    let tried = crowd.stop();
    let refused: Vec<String> = tried
        .iter()
        .filter_map(|t| t.result.as_ref().err())
        .cloned()
        .collect();
    assert!(
        refused.is_empty(),
        "{} of {} clients not served: {refused:?}",
        refused.len(),
        tried.len()
    );
    let log = instances[0].log();
    let served_in_delay = tried
        .iter()
        .filter(|t| t.started > signalled)
        .filter(|t| log.contains(&format!("Connection from {}\n", t.client)))
        .count();
    eprintln!(
        "shutdown delay 2 s: marked down {:?} after SIGTERM (checks every {check_ms} ms, \
         fall 2); {} clients, none refused; {served_in_delay} served by the stopping \
         instance after the signal",
        down - signalled,
        tried.len()
    );
    assert!(
        served_in_delay > 0,
        "the stopping instance served no one in its delay"
    );
}

/// What a client streaming `len` bytes through `frontend` gets back before the end.
fn echo_until_end(frontend: SocketAddr, len: usize) -> Vec<u8> {
    let mut client = TcpStream::connect(frontend).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(&vec![b'x'; len]).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut got = Vec::new();
    let _ = client.read_to_end(&mut got);
    got
}

/// `--fault close-after` on one instance (issue 25's check 11): HAProxy's echo check
/// sees what clients see. Cut before its 11 bytes, the check fails and HAProxy takes
/// the instance out: every client goes to the other. Cut after them, the check passes
/// and the instance stays in: a client sent there is cut mid-stream and HAProxy does not
/// retry it (`retries` covers connecting, not a connection the server has accepted).
#[test]
fn a_faulty_instance_behind_haproxy() {
    if !have_haproxy() {
        return;
    }
    let instances = [
        Server::start(&["--proxy-protocol", "--fault", "close-after=5"]),
        Server::start(&["--proxy-protocol"]),
    ];
    let mut haproxy = Haproxy::start(
        &[],
        free_port(),
        [instances[0].addr, instances[1].addr],
        "send-proxy-v2",
        200,
    );
    haproxy.wait_status("b", "UP");
    haproxy.wait_status("a", "DOWN");
    for _ in 0..10 {
        assert_eq!(served_by(&instances, seed_session(haproxy.frontend)), 1);
    }
    drop(haproxy);

    let instances = [
        Server::start(&["--proxy-protocol", "--fault", "close-after=1KiB"]),
        Server::start(&["--proxy-protocol"]),
    ];
    let mut haproxy = in_front_of(&instances, "send-proxy-v2");
    let (mut cut, mut whole) = (0, 0);
    for _ in 0..20 {
        let got = echo_until_end(haproxy.frontend, 4096);
        match got.len() {
            1024 => cut += 1,
            // Each chunk read gets its prefix: at least 4 more bytes than were sent.
            n if n >= 4100 => whole += 1,
            n => panic!("{n} bytes back"),
        }
    }
    assert!(cut > 0 && whole > 0, "cut {cut}, whole {whole}");
    haproxy.wait_status("a", "UP");
}
