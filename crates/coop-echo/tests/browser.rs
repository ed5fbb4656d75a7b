//! With a real browser (Debian's headless Chromium, driven by `chromedriver` over the W3C
//! WebDriver protocol): the page `serve --http` gives a browser loads, opens its WebSocket
//! to the same server, sends what was typed into it, and shows the echo that came back,
//! as a person would see it. A screenshot of the page is left in `target/browser/`.
//!
//! Skipped, with a note, where `chromedriver` or Chromium is missing; under `CI=true` that
//! fails instead.

mod common;

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use common::{IO_TIMEOUT, Server};

const CHROMIUM: &str = "/usr/bin/chromium";

/// How often a condition in the browser (or chromedriver's readiness) is looked at again:
/// there is nothing to be notified by from outside the browser.
const POLL: Duration = Duration::from_millis(50);

/// The key under which WebDriver gives an element's reference (fixed by the W3C spec).
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

#[test]
fn a_browser_sends_a_message_over_the_websocket_and_shows_the_echo() {
    if !common::need("chromedriver", "apt-get install chromium chromium-driver") {
        return;
    }
    if !Path::new(CHROMIUM).exists() {
        common::skip_without("chromium", "apt-get install chromium chromium-driver");
        return;
    }
    let server = Server::start(&["--http", "0"]);
    let http = server.http_addr();

    // Declared in this order so that they drop in reverse: the session (and its
    // browser) goes before chromedriver, which goes before the browser's profile.
    let driver = Chromedriver::start();
    let session = Session::create(&driver);

    session.navigate(&format!("http://{http}/"));
    let state = session.wait_for_text("#state", "Connected");
    assert_eq!(state, format!("Connected to ws://{http}/ws."));

    let message = "Hello from a real browser";
    session.send_keys("#message", message);
    session.click("#send");
    let echo = format!("\u{2190} {message}");
    let log = session.wait_for_text("#log", &echo);
    assert!(log.contains(&echo), "{log:?}");
    // The line the server's answer made, not the page's note of what it sent.
    assert_eq!(session.text("#log li.in"), echo);

    let png = session.screenshot();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/browser");
    fs::create_dir_all(dir).expect("create target/browser");
    let file = Path::new(dir).join("echo-page.png");
    fs::write(&file, &png).expect("write the screenshot");
    let written = fs::read(&file).expect("read the screenshot back");
    assert!(
        written.starts_with(PNG_SIGNATURE),
        "{} is not a PNG",
        file.display()
    );

    session.delete();
}

/// A running `chromedriver` on a loopback port, killed when dropped, and the directory
/// for its browser's profile, removed then (a fresh one, so no earlier run's state,
/// cache or lock file has a say).
struct Chromedriver {
    child: Child,
    addr: SocketAddr,
    profile: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits (at most `IO_TIMEOUT`) until it says
    /// it is ready for sessions.
    fn start() -> Chromedriver {
        let profile = std::env::temp_dir().join(format!(
            "coop-echo-browser-{}-{}",
            std::process::id(),
            std::time::SystemTime::UNIX_EPOCH
                .elapsed()
                .unwrap_or_default()
                .as_nanos()
        ));
        let deadline = Instant::now() + IO_TIMEOUT;
        // The port is free when picked but may be taken before chromedriver binds it;
        // chromedriver then exits, and another port is tried.
        for _ in 0..5 {
            let addr = free_port();
            let child = Command::new("chromedriver")
                .arg(format!("--port={}", addr.port()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            let mut driver = Chromedriver {
                child,
                addr,
                profile: profile.clone(),
            };
            loop {
                let exited = driver.child.try_wait().expect("chromedriver's state");
                if exited.is_some() {
                    break;
                }
                let ready = webdriver(addr, "GET", "/status", None)
                    .is_ok_and(|(code, status)| code == 200 && status["ready"] == true);
                if ready {
                    fs::create_dir_all(&driver.profile).expect("create the browser's profile");
                    return driver;
                }
                assert!(
                    Instant::now() < deadline,
                    "chromedriver on {addr} not ready within {IO_TIMEOUT:?}"
                );
                thread::sleep(POLL); // a readiness poll
            }
        }
        panic!("chromedriver exited at each of 5 ports: are they all taken?");
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.profile);
    }
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address")
}

/// A WebDriver session: one headless Chromium, deleted (the browser closed) when dropped
/// if [`Session::delete`] did not.
struct Session {
    driver: SocketAddr,
    id: String,
}

impl Session {
    fn create(driver: &Chromedriver) -> Session {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    // Chromium's sandbox refuses to start as root, and a container
                    // may lack the user namespaces it needs otherwise.
                    "--no-sandbox",
                    "--disable-gpu",
                    // This machine has no network beyond loopback: whatever Chromium
                    // fetches on its own (updates, sync, field trials) only fails
                    // slowly, and QUIC would try UDP first.
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    format!("--user-data-dir={}", driver.profile.display()),
                ],
            },
        }}});
        let (status, value) = webdriver(driver.addr, "POST", "/session", Some(&capabilities))
            .expect("chromedriver answers a new session");
        assert_eq!(status, 200, "no session: {value}");
        let id = value["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {value}"));
        Session {
            driver: driver.addr,
            id: id.to_string(),
        }
    }

    /// Sends one command of this session (`path` after `/session/ID`), and returns its
    /// answer's `value`; an error answer fails the test with WebDriver's message.
    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let full = format!("/session/{}{path}", self.id);
        let (status, value) = webdriver(self.driver, method, &full, body)
            .unwrap_or_else(|e| panic!("{method} {full}: {e}"));
        assert_eq!(
            status, 200,
            "{method} {full}: {}: {}",
            value["error"], value["message"]
        );
        value
    }

    fn navigate(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// The reference of the element `css` selects.
    fn find(&self, css: &str) -> String {
        let query = json!({"using": "css selector", "value": css});
        let element = self.command("POST", "/element", Some(&query));
        let id = element[ELEMENT].as_str();
        id.unwrap_or_else(|| panic!("no element reference for {css}: {element}"))
            .to_string()
    }

    /// The rendered text of the element `css` selects.
    fn text(&self, css: &str) -> String {
        let element = self.find(css);
        let text = self.command("GET", &format!("/element/{element}/text"), None);
        text.as_str().unwrap_or_default().to_string()
    }

    /// Waits (at most `IO_TIMEOUT`) until the text of `css` contains `needle`, and
    /// returns it. The page changes on events from its WebSocket, which the test cannot
    /// be told of: it can only look again.
    fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let text = self.text(css);
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {needle:?} within {IO_TIMEOUT:?}; it shows {text:?}"
            );
            thread::sleep(POLL);
        }
    }

    fn send_keys(&self, css: &str, text: &str) {
        let element = self.find(css);
        let keys = json!({ "text": text });
        self.command("POST", &format!("/element/{element}/value"), Some(&keys));
    }

    fn click(&self, css: &str) {
        let element = self.find(css);
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(&json!({})),
        );
    }

    /// The visible part of the page, as PNG.
    fn screenshot(&self) -> Vec<u8> {
        let png = self.command("GET", "/screenshot", None);
        let png = png.as_str().expect("a screenshot as a base64 string");
        base64::engine::general_purpose::STANDARD
            .decode(png)
            .expect("a screenshot in base64")
    }

    /// Ends the session (closing the browser), failing the test if chromedriver refuses.
    fn delete(mut self) {
        let id = std::mem::take(&mut self.id);
        let (status, value) = webdriver(self.driver, "DELETE", &format!("/session/{id}"), None)
            .expect("chromedriver answers the session's deletion");
        assert_eq!(status, 200, "session {id} not deleted: {value}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Only after a failure: the browser must not outlive the test.
        if !self.id.is_empty() {
            let _ = webdriver(
                self.driver,
                "DELETE",
                &format!("/session/{}", self.id),
                None,
            );
        }
    }
}

/// One WebDriver request to chromedriver at `addr`, over HTTP/1.1 on its own connection:
/// the answer's status and the `value` of its JSON body.
fn webdriver(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> io::Result<(u16, Value)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    // chromedriver answers `Connection: close` but leaves the connection open (until the
    // client closes it): the body ends where its `Content-Length` says, not at the end of
    // the stream.
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let malformed = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| malformed(&status_line))?;
    let mut length = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            return Err(malformed("the answer ended in its head"));
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse().map_err(|_| malformed(header))?);
            }
        }
    }
    let mut body = Vec::new();
    match length {
        Some(length) => {
            body.resize(length, 0);
            reader.read_exact(&mut body)?;
        }
        None => {
            reader.read_to_end(&mut body)?;
        }
    }
    let mut json: Value = serde_json::from_slice(&body)?;
    Ok((status, json["value"].take()))
}
