//! Runs coop-echo, a tokio echo server and a bare epoll loop (the floor) side by side,
//! interleaved, with each server pinned to core 0 and the load generator to core 1, and
//! writes `bench/RESULTS.md` and `bench/results.png`.
//!
//! Then the threads section: `coop-echo serve --threads 2`, unpinned and with
//! `--pin-threads`, against `--threads 1` (costs per echo, instructions among them) and
//! against `tokio-echo --workers 2` (closed loop); every process may run on every core,
//! so servers and load generator share them. `--threads-section` runs only that, and
//! prints its table instead of writing `RESULTS.md`.
//!
//! Then the TLS section ([`tls`]) and the HTTP and WebSocket section ([`http`]:
//! `coop-echo serve --http` against hyper on tokio, `bench/hyper-echo`); as with
//! threads, `--tls-section` and `--http-section` run only theirs and print its table.
//!
//! `bench/compare.sh` builds everything and runs this; see its header for what it needs.

mod chart;
mod http;
mod peer;
mod results;
mod tls;

use std::io;
use std::path::{Path, PathBuf};

use peer::{Kind, Placement, Server, Threaded};
use results::Samples;

/// The measurement plan; `--quick` shrinks it to check that everything runs.
struct Plan {
    runs: usize,
    /// Seconds of fixed-rate load for CPU and system calls per echo.
    rate_secs: u64,
    /// Connections held idle for the memory figure and loaded for the tail figure.
    many: usize,
    /// Connection counts for the chart.
    chart: Vec<usize>,
    closed_secs: u64,
    /// Connections the scale check holds on coop.
    scale: usize,
    /// Seconds of each load of the HTTP section (wrk, then the WebSocket load).
    http_secs: u64,
}

const RATE: u64 = 30_000;
/// Connections of the threads section's closed-loop comparison with tokio.
const THREADS_CLOSED: usize = 1000;
/// Threads of the load generator in the threads section's closed-loop runs.
const LOAD_THREADS: &str = "2";
const CALLGRIND_RATE: u64 = 3_000;

fn main() {
    if let Err(e) = run() {
        eprintln!("compare: {e}");
        std::process::exit(1);
    }
}

fn run() -> io::Result<()> {
    // bench/compare.sh checks these before it builds anything: a new one goes there too.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join("target/release");
    if args.iter().any(|a| a == "--instructions") {
        // Only the callgrind figure, for each server: minutes, not the whole run.
        let scratch = std::env::temp_dir();
        let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
        // coop-echo with an admin address: faults may be set, so its accept loop draws
        // for each connection (none in force here); the echo path is to cost the same.
        let with_admin = args.iter().any(|a| a == "--with-admin");
        let named = |kind: &Kind| only.iter().any(|name| *name == kind.name());
        for kind in Kind::ALL
            .into_iter()
            .filter(|kind| only.is_empty() || named(kind))
            .chain([Kind::Plain].into_iter().filter(named))
        {
            let extra: &[&str] = match kind {
                Kind::Coop if with_admin => &["--admin", "0"],
                _ => &[],
            };
            let per_echo = instructions_per_echo(kind, &bin, extra, Some(&scratch))?;
            println!(
                "{}: {per_echo:.0} user-space instructions per echo",
                kind.name()
            );
        }
        return Ok(());
    }
    let plan = if quick {
        Plan {
            runs: 1,
            rate_secs: 3,
            many: 1000,
            chart: vec![1, 100, 1000],
            closed_secs: 1,
            scale: 2000,
            http_secs: 3,
        }
    } else {
        Plan {
            runs: 5,
            rate_secs: 9,
            many: 10_000,
            chart: vec![1, 100, 1000, 10_000],
            closed_secs: 6,
            scale: 15_000,
            http_secs: 10,
        }
    };
    let out = root.join("bench");
    let mut samples = Samples::default();

    if args.iter().any(|a| a == "--threads-section") {
        threads_section(&bin, &plan, &mut samples)?;
        let command = format!(
            "bench/compare.sh --threads-section{}",
            if quick { " --quick" } else { "" }
        );
        println!("{}", results::threads_only(&samples, plan.many, &command));
        return Ok(());
    }

    if args.iter().any(|a| a == "--tls-section") {
        tls::section(&bin, &plan, &mut samples)?;
        let command = format!(
            "bench/compare.sh --tls-section{}",
            if quick { " --quick" } else { "" }
        );
        println!("{}", results::tls_only(&samples, &command));
        return Ok(());
    }

    if args.iter().any(|a| a == "--http-section") {
        http::section(&bin, &plan, &mut samples)?;
        let command = format!(
            "bench/compare.sh --http-section{}",
            if quick { " --quick" } else { "" }
        );
        println!("{}", results::http_only(&samples, plan.many, &command));
        return Ok(());
    }

    for run in 1..=plan.runs {
        for kind in in_turn(Kind::ALL, run) {
            eprintln!("run {run}/{}: {}", plan.runs, kind.name());
            measure_one(kind, &bin, &plan, &mut samples)?;
        }
    }
    for kind in Kind::ALL {
        eprintln!("callgrind: {}", kind.name());
        let per_echo = instructions_per_echo(kind, &bin, &[], Some(&out))?;
        samples.add(kind, "instructions", per_echo);
    }
    eprintln!("scale: coop holds {} connections", plan.scale);
    let scale = scale_check(&bin, plan.scale)?;
    threads_section(&bin, &plan, &mut samples)?;
    tls::section(&bin, &plan, &mut samples)?;
    http::section(&bin, &plan, &mut samples)?;

    let command = format!("bench/compare.sh{}", if quick { " --quick" } else { "" });
    let markdown = results::markdown(&samples, &plan.chart, plan.many, &scale, &command);
    std::fs::write(out.join("RESULTS.md"), &markdown)?;
    chart::draw(&samples, &plan.chart, &out.join("results.png"))?;
    println!("{markdown}");
    Ok(())
}

/// One server, one run: CPU and system calls per echo at a fixed rate, memory per idle
/// connection, and latency and CPU under closed-loop load at each connection count.
fn measure_one(kind: Kind, bin: &Path, plan: &Plan, samples: &mut Samples) -> io::Result<()> {
    let server = Server::start(kind, bin, &[])?;

    let syscalls = peer::SyscallsMidway::start(server.pid(), plan.rate_secs);
    let report = peer::load(
        bin,
        &server,
        &strings(&["-c", "100", "-s", "64", "--rate", &RATE.to_string()])
            .into_iter()
            .chain(strings(&["-d", &plan.rate_secs.to_string()]))
            .collect::<Vec<_>>(),
    )?;
    let rate = number(&report, "messages_per_sec")?;
    samples.add(kind, "cpu_us", number(&report, "server_cpu_us_per_msg")?);
    samples.add(
        kind,
        "client_cpu_us",
        number(&report, "client_cpu_us_per_msg")?,
    );
    samples.add(kind, "syscalls", syscalls.per_message(rate)?);
    samples.add(kind, "errors", errors(&report)?);

    samples.add(
        kind,
        "idle_bytes",
        peer::idle_memory_per_connection(&server, plan.many)?,
    );

    for &connections in &plan.chart {
        let report = peer::load(
            bin,
            &server,
            &strings(&[
                "-c",
                &connections.to_string(),
                "-d",
                &plan.closed_secs.to_string(),
            ]),
        )?;
        let at = |metric: &str| format!("{metric}@{connections}");
        samples.add(kind, &at("p50_us"), number(&report["latency_us"], "p50")?);
        samples.add(kind, &at("p99_us"), number(&report["latency_us"], "p99")?);
        samples.add(
            kind,
            &at("cpu_us"),
            number(&report, "server_cpu_us_per_msg")?,
        );
        samples.add(kind, &at("msgs"), number(&report, "messages_per_sec")?);
        samples.add(kind, "errors", errors(&report)?);
    }
    Ok(())
}

/// The servers of run `run` (from 1), in the order they are measured. With one fixed
/// order each server always follows the same one, and whatever a run leaves behind
/// (sockets closing after 10,000 connections, caches, where the OS scheduler last put
/// the threads) would fall on the same server every time. So the runs follow a Williams
/// design: over `N` runs (`2N` for an odd `N`), each server takes each place in a run
/// once and comes right after each other server once (twice, for an odd `N`).
pub fn in_turn<T: Copy, const N: usize>(servers: [T; N], run: usize) -> [T; N] {
    // The first run's order, by index: 0, 1, N-1, 2, N-2, ...; the others add to it.
    let first = |place: usize| match place {
        0 => 0,
        p if p % 2 == 1 => p.div_ceil(2),
        p => N - p / 2,
    };
    let shift = (run - 1) % N;
    let mut order = std::array::from_fn(|place| servers[(first(place) + shift) % N]);
    if N % 2 == 1 && (run - 1) / N % 2 == 1 {
        // For an odd N the shifts alone give each pair in one direction only.
        order.reverse();
    }
    order
}

/// The closed loops of the threads section: (connections, load generator threads).
/// At `many` connections the load runs on one thread too: with two, the tail moves from
/// run to run even against one serving thread (by hand, against `--threads 1`: p99/p50
/// 1.25, 1.35 and 1.73 with two load threads; 1.44, 1.26 and 1.26 with one).
pub fn closed_loops(many: usize) -> Vec<(usize, &'static str)> {
    let mut loops = vec![
        (THREADS_CLOSED, LOAD_THREADS),
        (many, LOAD_THREADS),
        (many, "1"),
    ];
    loops.dedup(); // --quick: many is 1,000 too
    loops
}

/// A closed loop's sample name: `p50_us@10000`, or `p50_us@10000/1` for a one-thread
/// load.
pub fn closed_metric(metric: &str, connections: usize, load_threads: &str) -> String {
    if load_threads == LOAD_THREADS {
        format!("{metric}@{connections}")
    } else {
        format!("{metric}@{connections}/{load_threads}")
    }
}

/// The threads section, `plan.runs` times, interleaved ([`in_turn`]): coop `--threads 1`,
/// coop `--threads 2` unpinned and pinned, and tokio `--workers 2`, each process free to
/// run on every core. Then callgrind's instructions per echo for coop on one thread and on
/// two, placed as the main table's: a count repeats where CPU time moves from run to
/// run, so it shows whether a second thread adds work to each echo.
fn threads_section(bin: &Path, plan: &Plan, samples: &mut Samples) -> io::Result<()> {
    for run in 1..=plan.runs {
        for setup in in_turn(Threaded::ALL, run) {
            eprintln!("threads run {run}/{}: {}", plan.runs, setup.label());
            measure_threaded(setup, bin, plan, samples)?;
        }
    }
    for setup in [Threaded::Coop1, Threaded::Coop2] {
        eprintln!("callgrind: {}", setup.label());
        let per_echo = instructions_per_echo(Kind::Coop, bin, setup.args(), None)?;
        samples.add(Kind::Coop, &setup.metric("instructions"), per_echo);
    }
    Ok(())
}

/// One threaded server, one run: CPU per echo at the fixed rate (coop's setups), and
/// closed-loop throughput and latency of the two-thread servers (see [`closed_loops`]).
fn measure_threaded(
    setup: Threaded,
    bin: &Path,
    plan: &Plan,
    samples: &mut Samples,
) -> io::Result<()> {
    let kind = setup.kind();
    let server = Server::start_with(kind, bin, &[], Placement::AllCores, setup.args())?;
    let errors_key = setup.metric("errors");

    if kind == Kind::Coop {
        // The fixed-rate load of the main table, its generator on one thread as there;
        // perf counts system calls in the middle of it, as for the main table.
        let syscalls = peer::SyscallsMidway::start(server.pid(), plan.rate_secs);
        let report = peer::load_on(
            bin,
            &server,
            Placement::AllCores,
            &strings(&[
                "-c",
                "100",
                "-s",
                "64",
                "--rate",
                &RATE.to_string(),
                "-d",
                &plan.rate_secs.to_string(),
            ]),
        )?;
        samples.add(
            kind,
            &setup.metric("cpu_us"),
            number(&report, "server_cpu_us_per_msg")?,
        );
        let rate = number(&report, "messages_per_sec")?;
        samples.add(kind, &setup.metric("rate_msgs"), rate);
        samples.add(kind, &setup.metric("syscalls"), syscalls.per_message(rate)?);
        samples.add(kind, &errors_key, errors(&report)?);
    }

    let loops = match setup {
        // One thread is only the baseline of the costs per echo.
        Threaded::Coop1 => Vec::new(),
        Threaded::Coop2 | Threaded::Coop2Pinned | Threaded::Tokio2 => closed_loops(plan.many),
    };
    for (connections, load_threads) in loops {
        let report = peer::load_on(
            bin,
            &server,
            Placement::AllCores,
            &strings(&[
                "--threads",
                load_threads,
                "-c",
                &connections.to_string(),
                "-s",
                "64",
                "-d",
                &plan.closed_secs.to_string(),
            ]),
        )?;
        let at = |metric: &str| setup.metric(&closed_metric(metric, connections, load_threads));
        samples.add(kind, &at("p50_us"), number(&report["latency_us"], "p50")?);
        samples.add(kind, &at("p99_us"), number(&report["latency_us"], "p99")?);
        samples.add(kind, &at("msgs"), number(&report, "messages_per_sec")?);
        samples.add(kind, &errors_key, errors(&report)?);
    }
    Ok(())
}

/// User-space instructions per echo, from two callgrind runs of 2 s and 5 s at 3,000
/// msg/s: their difference cancels start-up and shutdown. `extra` goes to the server after
/// its usual options (`--threads N`). coop's longer profile is copied into `keep`, if
/// given, as `callgrind.coop.out`: the main table keeps the one behind its figure there,
/// for callgrind_annotate, and another run must not overwrite it.
fn instructions_per_echo(
    kind: Kind,
    bin: &Path,
    extra: &[&str],
    keep: Option<&Path>,
) -> io::Result<f64> {
    let mut totals = Vec::new();
    for secs in [2, 5] {
        let file = std::env::temp_dir().join(format!("coop-callgrind-{}-{secs}.out", kind.name()));
        let valgrind = strings(&[
            "valgrind",
            "--tool=callgrind",
            &format!("--callgrind-out-file={}", file.display()),
        ]);
        let server = Server::start_with(kind, bin, &valgrind, Placement::Core(0), extra)?;
        peer::load(
            bin,
            &server,
            &strings(&[
                "-c",
                "100",
                "--rate",
                &CALLGRIND_RATE.to_string(),
                "-n",
                &(CALLGRIND_RATE * secs).to_string(),
            ]),
        )?;
        server.terminate()?;
        totals.push(peer::callgrind_total(&file)?);
        if let (Kind::Coop, 5, Some(dir)) = (kind, secs, keep) {
            let _ = std::fs::copy(&file, dir.join("callgrind.coop.out"));
        }
        let _ = std::fs::remove_file(&file);
    }
    let echoes = (CALLGRIND_RATE * 3) as f64;
    Ok(totals[1].saturating_sub(totals[0]) as f64 / echoes)
}

/// Holds `n` connections on coop, all loaded at once.
fn scale_check(bin: &Path, n: usize) -> io::Result<serde_json::Value> {
    let server = Server::start(Kind::Coop, bin, &[])?;
    peer::load(bin, &server, &strings(&["-c", &n.to_string(), "-d", "5"]))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn number(report: &serde_json::Value, key: &str) -> io::Result<f64> {
    report[key]
        .as_f64()
        .ok_or_else(|| io::Error::other(format!("no '{key}' in {report}")))
}

fn errors(report: &serde_json::Value) -> io::Result<f64> {
    Ok(number(report, "errors")?
        + number(report, "mismatches")?
        + number(report, "connect_failures")?)
}

#[cfg(test)]
mod tests {
    use super::in_turn;

    /// Over the runs of one design, how often each server takes each place, and how
    /// often each comes right after each other.
    fn counts<const N: usize>(runs: usize) -> ([[usize; N]; N], [[usize; N]; N]) {
        let servers: [usize; N] = std::array::from_fn(|i| i);
        let (mut places, mut after) = ([[0; N]; N], [[0; N]; N]);
        for run in 1..=runs {
            let order = in_turn(servers, run);
            for (place, &server) in order.iter().enumerate() {
                places[server][place] += 1;
            }
            for pair in order.windows(2) {
                after[pair[1]][pair[0]] += 1;
            }
        }
        (places, after)
    }

    #[test]
    fn each_server_takes_each_place_and_follows_each_other_alike() {
        assert_eq!(in_turn(['a', 'b', 'c', 'd'], 1), ['a', 'b', 'd', 'c']);
        assert_eq!(in_turn(['a', 'b', 'c', 'd'], 5), ['a', 'b', 'd', 'c']);
        let (places, after) = counts::<4>(4);
        assert_eq!(places, [[1; 4]; 4]);
        assert_eq!(
            after,
            [[0, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]
        );

        let (places, after) = counts::<3>(6);
        assert_eq!(places, [[2; 3]; 3]);
        assert_eq!(after, [[0, 2, 2], [2, 0, 2], [2, 2, 0]]);

        let (places, after) = counts::<2>(2);
        assert_eq!(places, [[1; 2]; 2]);
        assert_eq!(after, [[0, 1], [1, 0]]);
    }
}
