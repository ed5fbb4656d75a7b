//! Watching it work: scheduler traces.

mod common;

use std::io::Read;
use std::net::Shutdown;

use common::{Server, http, metric, round_trip};

/// `--trace` on a scripted session (one client, two messages) shows the connection's
/// task go through the seed's steps, in order: spawned, run, parked in the read waiting
/// area, woken by the OS poll, run, ..., finished.
#[test]
fn trace_shows_a_connection_s_life_in_order() {
    let server = Server::start(&["--trace", "--quiet"]);
    let mut client = server.connect();
    let me = client.local_addr().unwrap();
    assert_eq!(round_trip(&mut client, b"Hello\n", 10), b"GOT:Hello\n");
    assert_eq!(round_trip(&mut client, b"World\n", 10), b"GOT:World\n");
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();

    let spawn = server.wait_for_log(&format!("conn {me}"));
    let task = spawn
        .split("spawn task ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a task number")
        .to_string();
    let finish = format!("trace: finish task {task}");
    server.wait_for_log(&finish);

    // This task's events, in order, as letters: s(pawn) r(un) p(ark read) w(ake read) f.
    let log = server.log();
    let steps: String = log
        .lines()
        .filter_map(|line| line.strip_prefix("trace: "))
        .filter(|event| event.split_whitespace().nth(2) == Some(task.as_str()))
        .map(
            |event| match event.split_whitespace().collect::<Vec<_>>()[..] {
                ["spawn", ..] => 's',
                ["run", ..] => 'r',
                ["park", _, _, "read", ..] => 'p',
                ["wake", _, _, "read", ..] => 'w',
                ["finish", ..] => 'f',
                _ => '?',
            },
        )
        .collect();
    // Spawned and run; then park-wake-run turns, at least two (for World and for the end:
    // the client waits for each reply before it goes on); then finished.
    assert!(steps.starts_with("sr"), "{steps}\n{log}");
    assert!(steps.ends_with("f"), "{steps}");
    let middle = &steps[2..steps.len() - 1];
    assert!(!middle.contains('?'), "{steps}");
    let turns: Vec<&str> = middle.split_inclusive('r').collect();
    assert!(turns.iter().all(|t| *t == "pwr"), "{steps}");
    assert!(turns.len() >= 2, "{steps}");
    assert!(log.contains(&format!("trace: park task {task} read fd ")));
}

fn client(args: &[&str], input: &[u8]) -> std::process::Output {
    common::run(&[&["client"], args].concat(), input)
}

/// `printf 'Hello\nWorld\n' | coop-echo client`: both replies, then exit 0 once the
/// server has answered everything.
#[test]
fn the_client_in_a_pipe_gets_every_reply() {
    let server = Server::start(&["--quiet"]);
    let port = server.addr.port().to_string();
    let out = client(&["127.0.0.1", &port], b"Hello\nWorld\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"GOT:Hello\nGOT:World\n");

    // A last line without a newline is sent too, at the end of input.
    let out = client(&["127.0.0.1", &port], b"one\ntwo");
    assert_eq!(out.stdout, b"GOT:one\nGOT:two");
}

#[test]
fn the_client_says_so_when_nobody_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let out = client(&["127.0.0.1", &port], b"Hello\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot connect to 127.0.0.1:{port}")),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
}

/// `/metrics` during a run with known traffic reports the right counts.
#[test]
fn metrics_count_the_traffic() {
    let server = Server::start(&["--quiet", "--admin", "0"]);
    let admin = server.admin_addr();
    let mut clients: Vec<_> = (0..3).map(|_| server.connect()).collect();
    for client in &mut clients {
        assert_eq!(round_trip(client, b"abc\n", 8), b"GOT:abc\n");
    }
    let (status, body) = http(admin, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(metric::<f64>(&body, "echo_connections_total"), 3.0);
    assert_eq!(metric::<f64>(&body, "echo_connections_open"), 3.0);
    assert_eq!(metric::<f64>(&body, "echo_bytes_in_total"), 12.0);
    assert_eq!(metric::<f64>(&body, "echo_bytes_out_total"), 24.0);
    assert_eq!(metric::<f64>(&body, "echo_messages_in_total"), 3.0);
    assert!(
        metric::<f64>(&body, "coop_tasks_parked{area=\"read\"}") >= 3.0,
        "{body}"
    );
    assert_eq!(metric::<f64>(&body, "coop_tasks_ready"), 0.0);

    let (status, _) = http(admin, b"GET /other HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    let (status, _) = http(admin, b"POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
}

/// An oversized request is refused, and an admin client that sends nothing holds up no
/// one: echo clients are answered meanwhile, and so is the next scrape.
#[test]
fn the_admin_endpoint_is_bounded_and_blocks_nothing() {
    let server = Server::start(&["--quiet", "--admin", "0"]);
    let admin = server.admin_addr();
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 16 * 1024));
    let (status, _) = http(admin, &huge);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");

    let _silent = std::net::TcpStream::connect(admin).unwrap();
    let mut client = server.connect();
    // One thread serves both: were it waiting on the silent admin client, these
    // replies would never come (the client's reads give up after `IO_TIMEOUT`).
    for _ in 0..10 {
        assert_eq!(round_trip(&mut client, b"hi\n", 7), b"GOT:hi\n");
    }
    let (status, body) = http(admin, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(metric::<f64>(&body, "echo_messages_in_total"), 10.0);
}

/// `/healthz`: 200 while the server accepts; 503 as soon as SIGTERM starts a graceful
/// stop, while an open connection still drains (and is still answered).
#[test]
fn healthz_turns_503_when_a_graceful_stop_begins() {
    let mut server = Server::start(&["--admin", "0", "--shutdown-timeout", "20"]);
    let admin = server.admin_addr();
    let (status, body) = http(admin, b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    // Some checkers ask with HEAD: the same answer, without its body.
    let (status, body) = http(admin, b"HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!((status.as_str(), body.as_str()), ("HTTP/1.1 200 OK", ""));

    let mut open = server.connect();
    assert_eq!(round_trip(&mut open, b"hi\n", 7), b"GOT:hi\n");
    server.signal("TERM");
    let signalled = std::time::Instant::now();
    let turned = loop {
        let (status, _) = http(admin, b"GET /healthz HTTP/1.1\r\n\r\n");
        if status == "HTTP/1.1 503 Service Unavailable" {
            break signalled.elapsed();
        }
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(signalled.elapsed() < common::IO_TIMEOUT, "never 503");
    };
    eprintln!("/healthz said 503 {turned:?} after SIGTERM");
    assert!(
        turned < std::time::Duration::from_millis(100),
        "503 only {turned:?} after SIGTERM"
    );
    // Still draining: the open connection is answered, and the server still runs.
    assert_eq!(round_trip(&mut open, b"on\n", 7), b"GOT:on\n");
    assert!(server.is_running());
    drop(open);
    server.wait_exit(common::IO_TIMEOUT);
}

/// Kills a tmux session when dropped.
struct TmuxSession(String);

impl Drop for TmuxSession {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

fn tmux(args: &[&str]) -> String {
    let out = std::process::Command::new("tmux")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `top` in a real terminal (tmux), against a server with traffic: the screen shows the
/// counts, and `q` quits with status 0.
#[test]
fn top_draws_the_live_scheduler_and_q_quits() {
    if !common::need("tmux", "apt-get install tmux") {
        return;
    }
    let server = Server::start(&["--quiet", "--admin", "0"]);
    let admin = server.admin_addr();
    // Traffic for the view to show: a client that talks until the test is done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talker = {
        let stop = std::sync::Arc::clone(&stop);
        let mut client = server.connect();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
            {
                assert_eq!(round_trip(&mut client, b"tick\n", 9), b"GOT:tick\n");
                std::thread::sleep(std::time::Duration::from_millis(2)); // the client's pace
            }
        })
    };

    let session = TmuxSession(format!("coop-top-{}", std::process::id()));
    let status_file = std::env::temp_dir().join(format!("{}.status", session.0));
    let _ = std::fs::remove_file(&status_file);
    let command = format!(
        "{} top --admin {admin}; echo $? > {}",
        common::binary(),
        status_file.display()
    );
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session.0,
        "-x",
        "100",
        "-y",
        "30",
        &command,
    ]);

    // Wait for a screen with traffic on it (it refreshes once a second).
    let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
    let screen = loop {
        let screen = tmux(&["capture-pane", "-t", &session.0, "-p"]);
        let busy = screen.contains("connections 1 open")
            && !screen.contains(" 0 msg/s")
            && screen.contains("read ");
        if busy {
            break screen;
        }
        assert!(std::time::Instant::now() < deadline, "screen:\n{screen}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(screen.contains("tasks:"), "{screen}");
    assert!(screen.contains("messages per second"), "{screen}");

    tmux(&["send-keys", "-t", &session.0, "q"]);
    let deadline = std::time::Instant::now() + common::IO_TIMEOUT;
    let status = loop {
        if let Ok(status) = std::fs::read_to_string(&status_file) {
            if !status.is_empty() {
                break status;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "top did not quit on q"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.trim(), "0");
    let _ = std::fs::remove_file(&status_file);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    talker.join().unwrap();
}

/// A request to the admin address, raw: the response head and body as they came.
fn admin_exchange(admin: std::net::SocketAddr, request: &[u8]) -> (String, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(admin).unwrap();
    stream.set_read_timeout(Some(common::IO_TIMEOUT)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_string(), body.to_string())
}

/// `HEAD /healthz` gets GET's very head (its `Content-Length` too) and no body.
#[test]
fn head_healthz_has_get_s_headers_and_no_body() {
    let server = Server::start(&["--quiet", "--admin", "0"]);
    let admin = server.admin_addr();
    let (get_head, get_body) = admin_exchange(admin, b"GET /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(get_body, "ok\n");
    assert!(get_head.contains("\r\nContent-Length: 3\r\n"), "{get_head}");
    let (head_head, head_body) = admin_exchange(admin, b"HEAD /healthz HTTP/1.1\r\n\r\n");
    assert_eq!(head_head, get_head);
    assert_eq!(head_body, "");
    // Any HEAD answered goes without its body, whatever the status.
    let (head, body) = admin_exchange(admin, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    assert_eq!(body, "");
}

/// Connections that a listening socket on `port` has completed and the server has not
/// accepted yet (`/proc/net/tcp`: a listener's receive-queue column).
fn accept_queue(port: u16) -> usize {
    let port = format!(":{port:04X}");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols[1].ends_with(&port) && cols[3] == "0A")
        .map(|cols| {
            let queue = cols[4].split(':').nth(1).expect("tx_queue:rx_queue");
            usize::from_str_radix(queue, 16).unwrap()
        })
        .sum()
}

/// A probe of `/healthz` is answered at once, whatever other clients of the admin
/// address do: with 100 connections open to it that send nothing, the whole exchange
/// (connect to the last byte of the response) takes under 100 ms. And idle admin
/// connections cannot pile up: the server keeps a bounded number of them.
#[test]
fn healthz_is_prompt_beside_100_idle_admin_connections() {
    use std::io::Write;
    use std::time::{Duration, Instant};
    let server = Server::start(&["--quiet", "--admin", "0"]);
    let admin = server.admin_addr();
    let fds = server.fds();
    let idle: Vec<_> = (0..100)
        .map(|_| std::net::TcpStream::connect(admin).unwrap())
        .collect();
    // Taken in by the server (or not, if it holds them back): polled, for a second at
    // most.
    let deadline = Instant::now() + Duration::from_secs(1);
    while accept_queue(admin.port()) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10)); // polling /proc/net/tcp
    }
    let started = Instant::now();
    let mut probe = std::net::TcpStream::connect(admin).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    probe.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    let mut response = String::new();
    let read = probe.read_to_string(&mut response);
    let took = started.elapsed();
    eprintln!("/healthz beside 100 idle admin connections: {took:?}");
    read.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
    assert!(took < Duration::from_millis(100), "/healthz took {took:?}");
    // The idle ones are bounded: more of them cost no more descriptors.
    let more: Vec<_> = (0..200)
        .map(|_| std::net::TcpStream::connect(admin).unwrap())
        .collect();
    let (status, _) = http(admin, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let held = server.fds() - fds;
    assert!(
        held <= 64 + 2,
        "{held} descriptors for idle admin connections"
    );
    drop((idle, more));
}
