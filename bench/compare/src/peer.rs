//! The servers under test, and the probes that measure them.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// One of the servers compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Coop,
    Tokio,
    Floor,
    /// coop with the plain `read`/`write_all` loop: measured on request only
    /// (`--instructions plain`), not in the full run.
    Plain,
    /// hyper and tokio-tungstenite on tokio's current-thread runtime, `bench/hyper-echo`:
    /// the peer of `coop-echo serve --http` in the HTTP section only.
    Hyper,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Coop, Kind::Tokio, Kind::Floor];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Coop => "coop",
            Kind::Tokio => "tokio",
            Kind::Floor => "floor",
            Kind::Plain => "plain",
            Kind::Hyper => "hyper",
        }
    }

    fn command(self, bin: &Path) -> (PathBuf, Vec<&'static str>) {
        match self {
            Kind::Coop => (bin.join("coop-echo"), vec!["serve", "--quiet"]),
            Kind::Tokio => (bin.join("tokio-echo"), vec![]),
            Kind::Floor => (bin.join("floor-echo"), vec![]),
            Kind::Plain => (bin.join("plain-echo"), vec![]),
            Kind::Hyper => (bin.join("hyper-echo"), vec![]),
        }
    }
}

/// A server of the threads section, with the options that give it its threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threaded {
    /// `coop-echo serve --threads 1`.
    Coop1,
    /// `coop-echo serve --threads 2`.
    Coop2,
    /// `coop-echo serve --threads 2 --pin-threads`: serving thread `i` on core `i`.
    Coop2Pinned,
    /// `tokio-echo --workers 2`: tokio's multi-thread runtime.
    Tokio2,
}

impl Threaded {
    /// Every server of the section; [`crate::in_turn`] gives each run its order.
    pub const ALL: [Threaded; 4] = [
        Threaded::Coop1,
        Threaded::Coop2,
        Threaded::Coop2Pinned,
        Threaded::Tokio2,
    ];

    pub fn kind(self) -> Kind {
        match self {
            Threaded::Coop1 | Threaded::Coop2 | Threaded::Coop2Pinned => Kind::Coop,
            Threaded::Tokio2 => Kind::Tokio,
        }
    }

    /// What the server is given after its usual options.
    pub fn args(self) -> &'static [&'static str] {
        match self {
            Threaded::Coop1 => &["--threads", "1"],
            Threaded::Coop2 => &["--threads", "2"],
            Threaded::Coop2Pinned => &["--threads", "2", "--pin-threads"],
            Threaded::Tokio2 => &["--workers", "2"],
        }
    }

    /// How RESULTS.md names it.
    pub fn label(self) -> String {
        format!("{} `{}`", self.kind().name(), self.args().join(" "))
    }

    /// The name its samples of `metric` are kept under (beside its kind), apart from the
    /// single-thread sections' samples of the same metric.
    pub fn metric(self, metric: &str) -> String {
        format!(
            "{}: {metric}",
            self.args().join(" ").trim_start_matches("--")
        )
    }
}

/// The cores a server or the load generator may run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// This one core only.
    Core(u32),
    /// Every online core. Said explicitly: compare itself runs under `taskset -c 1`,
    /// and a child would inherit that.
    AllCores,
}

impl Placement {
    /// The list `taskset -c` takes.
    fn cpus(self) -> io::Result<String> {
        match self {
            Placement::Core(core) => Ok(core.to_string()),
            Placement::AllCores => Ok(std::fs::read_to_string("/sys/devices/system/cpu/online")?
                .trim()
                .to_string()),
        }
    }
}

/// A running server (pinned to core 0 unless started otherwise); killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts `kind` on a free loopback port, pinned to core 0, under `wrapper` (e.g.
    /// valgrind) if given.
    pub fn start(kind: Kind, bin: &Path, wrapper: &[String]) -> io::Result<Server> {
        Server::start_with(kind, bin, wrapper, Placement::Core(0), &[])
    }

    /// As [`Server::start`], on the cores `placement` says, with `extra` after the
    /// server's usual options (e.g. `--threads 2`).
    pub fn start_with(
        kind: Kind,
        bin: &Path,
        wrapper: &[String],
        placement: Placement,
        extra: &[&str],
    ) -> io::Result<Server> {
        let (program, args) = kind.command(bin);
        let args: Vec<&str> = args
            .into_iter()
            .chain(extra.iter().copied())
            .chain(["--host", "127.0.0.1", "--port", "0"])
            .collect();
        Server::spawn(&program, &args, wrapper, placement, |line| {
            line.split_once("Listening on ")
                .map(|(_, addr)| addr.trim().to_string())
        })
    }

    /// Starts `kind` (coop or hyper) for the HTTP section, pinned to core 0, its HTTP
    /// listener on a free loopback port: [`Server::addr`] is that listener's.
    pub fn start_http(kind: Kind, bin: &Path) -> io::Result<Server> {
        let (program, args) = kind.command(bin);
        match kind {
            Kind::Coop => {
                let args: Vec<&str> = args
                    .into_iter()
                    .chain([
                        "--host",
                        "127.0.0.1",
                        "--port",
                        "0",
                        "--http",
                        "127.0.0.1:0",
                    ])
                    .collect();
                // `Listening on http://127.0.0.1:PORT (HTTP/1.1, HTTP/2, WebSocket)`, after
                // the TCP port's line.
                Server::spawn(&program, &args, &[], Placement::Core(0), |line| {
                    let (_, rest) = line.split_once("Listening on http://")?;
                    rest.split_whitespace().next().map(str::to_string)
                })
            }
            Kind::Hyper => Server::spawn(
                &program,
                &["127.0.0.1:0"],
                &[],
                Placement::Core(0),
                |line| {
                    line.split_once("Listening on ")
                        .map(|(_, addr)| addr.trim().to_string())
                },
            ),
            _ => Err(io::Error::other(format!(
                "{} has no HTTP listener",
                kind.name()
            ))),
        }
    }

    /// Runs `program` with `args` on the cores `placement` says, under `wrapper` if
    /// given, and waits for the line of its stderr from which `listening` takes its
    /// address.
    fn spawn(
        program: &Path,
        args: &[&str],
        wrapper: &[String],
        placement: Placement,
        listening: fn(&str) -> Option<String>,
    ) -> io::Result<Server> {
        let mut child = Command::new("taskset")
            .args(["-c", &placement.cpus()?])
            .args(wrapper)
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = listening(&line) {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr.parse().map_err(io::Error::other)?,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "{} did not say 'Listening on'",
                    program.display()
                )));
            }
        };
        Ok(Server { child, addr })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::other("no VmRSS"))
    }

    /// Stops the server with SIGTERM (so valgrind writes its profile) and waits.
    pub fn terminate(mut self) -> io::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `coop-echo bench` pinned to core 1 against `server`, returning its JSON report.
pub fn load(bin: &Path, server: &Server, args: &[String]) -> io::Result<serde_json::Value> {
    load_on(bin, server, Placement::Core(1), args)
}

/// As [`load`], with the load generator on the cores `placement` says.
pub fn load_on(
    bin: &Path,
    server: &Server,
    placement: Placement,
    args: &[String],
) -> io::Result<serde_json::Value> {
    let out = Command::new("taskset")
        .args(["-c", &placement.cpus()?])
        .arg(bin.join("coop-echo"))
        .arg("bench")
        .args(["--port", &server.addr.port().to_string()])
        .args(["--server-pid", &server.pid().to_string()])
        .args(["--json", "--quiet"])
        .args(args)
        .stderr(Stdio::inherit())
        .output()?;
    serde_json::from_slice(&out.stdout).map_err(|e| {
        io::Error::other(format!(
            "coop-echo bench {args:?} gave no report ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        ))
    })
}

/// Counts the system calls `pid` makes over `window` (perf's syscall tracepoint).
/// perf counting a server's system calls in the middle of a fixed-rate load of `secs`
/// seconds: from 2 s in, for `secs - 3` s, clear of start-up and of the end.
pub struct SyscallsMidway {
    window: Duration,
    perf: thread::JoinHandle<io::Result<u64>>,
}

impl SyscallsMidway {
    /// Starts counting for server `pid`, whose load of `secs` seconds starts now.
    pub fn start(pid: u32, secs: u64) -> SyscallsMidway {
        let window = Duration::from_secs(secs.saturating_sub(3).max(1));
        let perf = thread::spawn(move || {
            thread::sleep(Duration::from_secs(2));
            count_syscalls(pid, window)
        });
        SyscallsMidway { window, perf }
    }

    /// System calls per message, for a load that ran at `rate` messages a second.
    pub fn per_message(self, rate: f64) -> io::Result<f64> {
        let count = self
            .perf
            .join()
            .map_err(|_| io::Error::other("perf thread panicked"))??;
        Ok(count as f64 / (rate * self.window.as_secs_f64()))
    }
}

fn count_syscalls(pid: u32, window: Duration) -> io::Result<u64> {
    let out = Command::new("perf")
        .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p"])
        .arg(pid.to_string())
        .args(["--", "sleep", &format!("{}", window.as_secs_f64())])
        .output()?;
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| io::Error::other(format!("perf stat gave no count: {text}")))
}

/// Opens `n` connections, each answering one message so its handler is in its steady
/// state, and returns the server's resident memory per connection while they sit idle.
pub fn idle_memory_per_connection(server: &Server, n: usize) -> io::Result<f64> {
    let before = server.rss()?;
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(server.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.write_all(b"x\n")?;
        let mut reply = [0; 6];
        stream.read_exact(&mut reply)?;
        held.push(stream);
    }
    let after = server.rss()?;
    drop(held);
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// Total instructions callgrind counted, from its output file.
pub fn callgrind_total(file: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no totals in {}", file.display())))
}
