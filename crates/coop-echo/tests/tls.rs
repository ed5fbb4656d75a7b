//! `serve --tls-cert --tls-key`: the echo over TLS, with real clients (openssl's
//! s_client, `coop-echo client --tls`, `bench --tls`), and what a hostile or broken client
//! does to it. The certificates are made here, for each test, by rcgen: no key is kept in
//! the repository.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use common::certs::Certs;
use common::{IO_TIMEOUT, Server};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

/// A TLS client config that trusts the test CA.
fn trusting(certs: &Certs) -> Arc<rustls::ClientConfig> {
    coop_echo::tls::client_config(Some(Path::new(&certs.path("ca.pem")))).unwrap()
}

/// A well-behaved TLS client on blocking std sockets, its reads and writes bounded.
fn tls_client(server: &Server, certs: &Certs) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").unwrap();
    let session = ClientConnection::new(trusting(certs), name).unwrap();
    StreamOwned::new(session, server.connect())
}

/// Sends `line` and reads back `GOT:` + `line`.
fn echo_once(client: &mut StreamOwned<ClientConnection, TcpStream>, line: &[u8]) {
    client.write_all(line).unwrap();
    client.flush().unwrap();
    let mut reply = vec![0; 4 + line.len()];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(reply, [b"GOT:", line].concat());
}

/// The bytes of a ClientHello, as a client's first flight.
fn client_hello(certs: &Certs) -> Vec<u8> {
    let name = ServerName::try_from("localhost").unwrap();
    let mut session = ClientConnection::new(trusting(certs), name).unwrap();
    let mut hello = Vec::new();
    while session.wants_write() {
        session.write_tls(&mut hello).unwrap();
    }
    hello
}

/// `openssl s_client` against `server`, trusting the test CA, with `more` options; its
/// stdout comes line by line through a channel. Killed on drop.
struct SClient {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl SClient {
    /// `None` if there is no openssl here (and not under CI, where that fails).
    fn start(server: &Server, certs: &Certs, more: &[&str]) -> Option<SClient> {
        if Command::new("openssl").arg("version").output().is_err() {
            common::skip_without("openssl", "apt-get install openssl");
            return None;
        }
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &server.addr.to_string()])
            .args(["-servername", "localhost", "-CAfile", &certs.path("ca.pem")])
            .args(more)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_client");
        let stdin = child.stdin.take().unwrap();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Some(SClient {
            child,
            stdin,
            lines,
        })
    }

    /// Sends `line`.
    fn send(&mut self, line: &[u8]) {
        self.stdin.write_all(line).unwrap();
        self.stdin.flush().unwrap();
    }

    /// The next line of its output, if one comes within `IO_TIMEOUT`.
    fn next_line(&self) -> Option<String> {
        self.lines.recv_timeout(IO_TIMEOUT).ok()
    }

    /// Whether a line `wanted` comes within `IO_TIMEOUT` of each line before it.
    fn reads(&self, wanted: &str) -> bool {
        (0..)
            .map_while(|_| self.next_line())
            .any(|line| line == wanted)
    }
}

impl Drop for SClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until the server closes: true if it did (EOF or reset) within `IO_TIMEOUT`.
fn read_until_closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// Test 1: Debian's openssl, the TLS client people reach for, gets the seed's answer;
/// so does `coop-echo client --tls`.
#[test]
fn openssl_s_client_and_client_tls_get_the_echo() {
    if !common::need("openssl", "apt-get install openssl") {
        return;
    }
    let certs = Certs::new();
    let server = certs.serve(&[]);
    let port = server.addr.port().to_string();

    let Some(mut s_client) = SClient::start(&server, &certs, &["-quiet", "-verify_return_error"])
    else {
        return;
    };
    // s_client -quiet goes on after its stdin ends: the reply line, then it is stopped.
    s_client.send(b"Hello\n");
    let line = s_client.next_line();
    assert_eq!(line.as_deref(), Some("GOT:Hello"), "log:\n{}", server.log());
    drop(s_client);
    server.wait_for_log("(TLS 1.3)");

    let output = common::run(
        &[
            "client",
            "--tls",
            "--tls-ca",
            &certs.path("ca.pem"),
            "localhost",
            &port,
        ],
        b"Hello\nWorld\n",
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"GOT:Hello\nGOT:World\n");
}

/// `client --tls` checks the certificate: signed by another CA, it is refused (and the
/// server says why the handshake ended); `--insecure` takes it, and says so.
#[test]
fn client_tls_refuses_a_certificate_it_cannot_trust() {
    let certs = Certs::new();
    let others = Certs::new();
    let server = certs.serve(&[]);
    let port = server.addr.port().to_string();

    let output = common::run(
        &[
            "client",
            "--tls",
            "--tls-ca",
            &others.path("ca.pem"),
            "127.0.0.1",
            &port,
        ],
        b"Hello\n",
    );
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("TLS handshake with 127.0.0.1:"), "{stderr}");
    assert!(stderr.contains("not signed by one in --tls-ca"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    server.wait_for_log("failed: the client ended it with the alert");

    let output = common::run(
        &["client", "--tls", "--insecure", "127.0.0.1", &port],
        b"Hi\n",
    );
    assert!(output.status.success(), "{output:?}");
    assert_eq!(output.stdout, b"GOT:Hi\n");
    assert!(String::from_utf8_lossy(&output.stderr).contains("WARNING: --insecure"));

    // Neither: told what to give, before any connection; bench alike.
    for args in [
        &["client", "--tls", "127.0.0.1", &port][..],
        &["bench", "--port", &port, "--tls"],
    ] {
        let output = common::run(args, b"");
        assert_eq!(output.status.code(), Some(2), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("<--tls-ca <PEM>|--insecure>"), "{stderr}");
    }
}

/// A plain load against a TLS server is told that the server speaks TLS.
#[test]
fn a_plain_bench_against_tls_says_so() {
    let certs = Certs::new();
    let server = certs.serve(&[]);
    let port = server.addr.port().to_string();
    let output = common::run(&["bench", "--port", &port, "-c", "1", "-n", "1", "-q"], b"");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("the server speaks TLS (give --tls)"),
        "{stderr}"
    );
}

/// A plain client against a TLS server is told so in one line, as bench is, and prints
/// none of the server's TLS alert (it printed the alert's bytes, then that the server had
/// closed).
#[test]
fn a_plain_client_against_tls_says_so() {
    let certs = Certs::new();
    let server = certs.serve(&[]);
    let port = server.addr.port().to_string();
    let output = common::run(&["client", "localhost", &port], b"Hello\n");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(output.stdout, b"", "{stderr}");
    assert_eq!(
        stderr,
        format!(
            "coop-echo: connection to localhost:{port}: the first reply is a TLS record: \
             the server speaks TLS (give --tls)\n"
        )
    );
}

/// What a TLS client says when the handshake cannot work, in one line each: a server
/// that does not speak TLS, a certificate for another name, and a self-signed CA
/// certificate used as a server's (as `openssl req -x509` makes by default).
#[test]
fn client_tls_says_why_in_words() {
    let certs = Certs::new();
    let plain = Server::start(&[]);
    let tls = certs.serve(&[]);
    let ca = certs.path("ca.pem");
    let client = |server: &Server, more: &[&str]| {
        let port = server.addr.port().to_string();
        let mut args = vec!["client", "--tls", "127.0.0.1", &port];
        args.extend_from_slice(more);
        let output = common::run(&args, b"Hello\n");
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    };
    let said = client(&plain, &["--tls-ca", &ca]);
    assert!(said.contains("the server does not speak TLS"), "{said}");
    let said = client(&tls, &["--tls-ca", &ca, "--tls-name", "example.com"]);
    assert!(
        said.contains("give the name it carries with --tls-name"),
        "{said}"
    );
    let said = client(&tls, &["--tls-ca", &ca, "--tls-name", ""]);
    assert!(said.contains("--tls-name '' is not a DNS name"), "{said}");

    // A self-signed certificate that says it is a CA, trusted as such.
    let dir = Certs::new();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    std::fs::write(
        dir.path("cert.pem"),
        params.self_signed(&key).unwrap().pem(),
    )
    .unwrap();
    std::fs::write(dir.path("key.pem"), key.serialize_pem()).unwrap();
    let server = dir.serve(&[]);
    let said = client(&server, &["--tls-ca", &dir.path("cert.pem")]);
    assert!(said.contains("is a CA certificate"), "{said}");
}

/// Test 2: plain text on the TLS port, a handshake that stalls past the limit, and 1,000
/// clients that send a ClientHello and vanish: each is closed with one log line naming
/// it and the reason (past the first few, at debug level: `tests/flood.rs`), and a
/// well-behaved TLS client is served all along.
#[test]
fn hostile_clients_are_closed_with_a_line_each_and_the_server_goes_on() {
    const VANISHING: usize = 1000;
    let certs = Certs::new();
    let (cert, key) = (certs.path("cert.pem"), certs.path("key.pem"));
    let tls = [
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-handshake-timeout",
        "1",
    ];
    let server = Arc::new(Server::start_with(&[], "127.0.0.1", 0, "debug", &tls));

    // A well-behaved client, round trips all along, counted.
    let done = Arc::new(AtomicBool::new(false));
    let trips = Arc::new(AtomicU64::new(0));
    let good = {
        let (done, trips) = (Arc::clone(&done), Arc::clone(&trips));
        let mut client = tls_client(&server, &certs);
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let trip = trips.load(Ordering::Relaxed);
                echo_once(&mut client, format!("line {trip}\n").as_bytes());
                trips.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Plain text: refused as such.
    let mut plain = server.connect();
    plain.write_all(b"Hello\n").unwrap();
    assert!(read_until_closed(&mut plain));
    let local = plain.local_addr().unwrap();
    let line = server.wait_for_log(&format!("TLS handshake with {local} failed"));
    assert!(line.contains("does not speak TLS"), "{line}");

    // Half a ClientHello, then nothing: let go at the limit.
    let mut stalled = server.connect();
    let hello = client_hello(&certs);
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    let before = trips.load(Ordering::Relaxed);
    assert!(read_until_closed(&mut stalled));
    let local = stalled.local_addr().unwrap();
    let line = server.wait_for_log(&format!("TLS handshake with {local} failed"));
    assert!(line.contains("not done within 1 s"), "{line}");
    // The second the handshake hung, the good client was served.
    assert!(trips.load(Ordering::Relaxed) > before);

    // A ClientHello, then gone; every hundred, a round trip of another good client.
    let mut between = tls_client(&server, &certs);
    let mut vanished = Vec::with_capacity(VANISHING);
    for i in 0..VANISHING {
        let mut stream = server.connect();
        stream.write_all(&hello).unwrap();
        vanished.push(stream.local_addr().unwrap());
        if i % 100 == 0 {
            echo_once(&mut between, format!("between {i}\n").as_bytes());
        }
    }
    let failures = |log: &str| {
        log.lines()
            .filter(|l| l.contains("TLS handshake with") && l.contains("failed"))
            .count()
    };
    let log = server.wait_until("a line for every vanished client", |log| {
        failures(log) >= VANISHING + 2
    });
    // One line each (why: mostly that it closed; on a loaded machine the handshake
    // timeout may come first).
    for client in &vanished {
        let needle = format!("TLS handshake with {client} failed: ");
        assert_eq!(log.matches(&needle).count(), 1, "{client}");
    }
    assert_eq!(failures(&log), VANISHING + 2);

    done.store(true, Ordering::Relaxed);
    good.join().expect("the good client was served throughout");
    let mut after = tls_client(&server, &certs);
    echo_once(&mut after, b"Hello\n");
}

/// A load balancer's PROXY header, then TLS, the header and the ClientHello in one
/// segment: the handshake reads on from where the header ended, and the log names the
/// client the header names.
#[test]
fn tls_behind_a_proxy_header() {
    let certs = Certs::new();
    let (cert, key) = (certs.path("cert.pem"), certs.path("key.pem"));
    let server = Server::start(&["--tls-cert", &cert, "--tls-key", &key, "--proxy-protocol"]);
    let name = ServerName::try_from("localhost").unwrap();
    let mut session = ClientConnection::new(trusting(&certs), name).unwrap();
    let mut first = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 25000\r\n".to_vec();
    while session.wants_write() {
        session.write_tls(&mut first).unwrap();
    }
    let mut socket = server.connect();
    socket.write_all(&first).unwrap();
    let mut client = StreamOwned::new(session, socket);
    echo_once(&mut client, b"Hello\n");
    server.wait_for_log("Connection from 192.0.2.7:40000 (TLS 1.3)");
}

/// The idle timeout holds over TLS: a client that says nothing is closed, with a
/// close_notify, and the line says why.
#[test]
fn an_idle_tls_client_is_closed() {
    let certs = Certs::new();
    let server = certs.serve(&["--idle-timeout", "0.5"]);
    let mut client = tls_client(&server, &certs);
    echo_once(&mut client, b"Hello\n");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.wait_for_log("idle for 0.5 s (6 bytes in, 10 bytes out)");
}

/// A TLS client that sends and never reads stalls itself: the server reads no more from
/// it while a reply waits, and lets it go after the idle timeout, saying why.
#[test]
fn a_tls_client_that_takes_no_reply_is_let_go() {
    let certs = Certs::new();
    let server = certs.serve(&["--idle-timeout", "0.5"]);
    let mut client = tls_client(&server, &certs);
    echo_once(&mut client, b"Hello\n");
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    // Fails once the server has closed; a write that blocks past IO_TIMEOUT fails too.
    while client.write_all(&chunk).is_ok() {
        sent += chunk.len();
        assert!(
            sent < 1 << 30,
            "the server read 1 GiB without the client reading"
        );
    }
    let line = server.wait_for_log("Connection closed 127.0.0.1");
    assert!(
        line.contains("the client took no reply for 0.5 s"),
        "{line}"
    );
    // What the server read is what fits in the sockets' buffers, not what was sent.
    let bytes_in: usize = line
        .split("s (")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a count of bytes in");
    assert!(bytes_in < 64 << 20, "{line}");
}

/// What rustls answers to a record while the server only reads goes out at once: a TLS
/// 1.2 client that asks to renegotiate gets its refusal (a `no_renegotiation` alert)
/// without sending anything more, and gives up at once (found by a review: the alert
/// waited for the next reply, here for the idle timeout).
#[test]
fn a_refused_renegotiation_is_answered_at_once() {
    if !common::need("openssl", "apt-get install openssl") {
        return;
    }
    let certs = Certs::new();
    let server = certs.serve(&["--idle-timeout", "60"]);
    let Some(mut s_client) = SClient::start(&server, &certs, &["-tls1_2"]) else {
        return;
    };
    s_client.send(b"first\n");
    assert!(
        s_client.reads("GOT:first"),
        "no reply; log:\n{}",
        server.log()
    );
    // s_client's command for a renegotiation: a line that is just `R`.
    s_client.send(b"R\n");
    let line = server.wait_for_log("Connection closed 127.0.0.1");
    assert!(line.contains("alert"), "{line}");
}

/// A graceful stop ends a TLS connection still open at the deadline with a close_notify
/// (a clean end, not a truncation), and names a client caught mid-handshake (found by a
/// review: both were cut without a word to the client).
#[test]
fn a_graceful_stop_says_goodbye_over_tls() {
    let certs = Certs::new();
    let mut server = certs.serve(&["--shutdown-timeout", "0.2"]);
    // Half a handshake first: the server accepts in order, so once the next client is
    // answered, this one is accepted and mid-handshake.
    let mut halfway = server.connect();
    let hello = client_hello(&certs);
    halfway.write_all(&hello[..hello.len() / 2]).unwrap();
    let halfway_addr = halfway.local_addr().unwrap();
    let mut client = tls_client(&server, &certs);
    echo_once(&mut client, b"Hello\n");

    server.signal("TERM");
    // rustls says UnexpectedEof for an end without close_notify.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("a close_notify");
    assert!(rest.is_empty());
    assert!(read_until_closed(&mut halfway));
    assert!(server.wait_exit(IO_TIMEOUT).success());
    let log = server.log();
    assert!(
        log.contains(&format!(
            "Connection closed {}: the server stopped (6 bytes in, 10 bytes out)",
            client.sock.local_addr().unwrap()
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "TLS handshake with {halfway_addr} cut short: the server stopped"
        )),
        "{log}"
    );
}

/// `bench --tls`: every reply checked over TLS, pipelined and in line framing, and the
/// handshake rate reported.
#[test]
fn bench_over_tls() {
    let certs = Certs::new();
    let server = certs.serve(&["--quiet", "--framing", "line"]);
    let port = server.addr.port().to_string();
    let output = common::run(
        &[
            "bench",
            "--port",
            &port,
            "--tls",
            "--tls-ca",
            &certs.path("ca.pem"),
            "--tls-name",
            "localhost",
            "--framing",
            "line",
            "-c",
            "100",
            "-n",
            "4000",
            "--pipeline",
            "4",
            "--size",
            "3000",
            "--json",
            "--quiet",
        ],
        b"",
    );
    assert!(output.status.success(), "{output:?}");
    let report = common::json_report(&output);
    assert_eq!(report["messages"], 4000);
    assert_eq!(report["errors"], 0);
    assert_eq!(report["mismatches"], 0);
    assert_eq!(report["tls"], true);
    assert!(report["handshakes_per_sec"].as_f64().unwrap() > 0.0);
}

/// A certificate or key that cannot be used stops the server before it listens, with one
/// line and a non-zero exit.
#[test]
fn unusable_certificates_are_refused_in_one_line() {
    let certs = Certs::new();
    let others = Certs::new();
    let (cert, key, ca) = (
        certs.path("cert.pem"),
        certs.path("key.pem"),
        certs.path("ca.pem"),
    );
    let other_key = others.path("key.pem");
    let missing = certs.path("missing.pem");
    // rustls reads no encrypted key; a block of base64 that is no certificate.
    let encrypted = certs.path("encrypted.pem");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAECAwQFBgc=\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let garbage = certs.path("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\nAAECAwQFBgc=\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    for (args, says) in [
        (
            vec!["--tls-cert", &missing, "--tls-key", &key],
            "cannot read --tls-cert",
        ),
        (
            vec!["--tls-cert", &key, "--tls-key", &key],
            "no certificate in it",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &ca],
            "no private key in it",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            "is not the key of",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", &encrypted],
            "the key is encrypted",
        ),
        (
            vec!["--tls-cert", &garbage, "--tls-key", &key],
            "cannot be read (bad encoding)",
        ),
    ] {
        let mut all = vec!["serve", "--host", "127.0.0.1", "--port", "0"];
        all.extend(args);
        let output = common::run(&all, b"");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{all:?}: {stderr}");
        assert!(stderr.contains(says), "{all:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{all:?}: {stderr}");
    }
    // One without the other is a usage error.
    let output = common::run(&["serve", "--port", "0", "--tls-cert", &cert], b"");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}
