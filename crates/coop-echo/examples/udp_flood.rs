//! The server's CPU cost per UDP datagram under forged sources: sends datagrams to a
//! `coop-echo serve --udp` on loopback from `--sources` distinct addresses on 127/8 in
//! turn (one plain socket, each datagram's source picked with `IP_PKTINFO`; see
//! `tests/forge`), at `--rate` a second, and reports the server's CPU time (from
//! `/proc/PID/task/*/schedstat`) per datagram it received (sent, less what the kernel
//! dropped for its socket, from `/proc/net/udp`). Linux only.
//!
//! ```sh
//! cargo build --release --example udp_flood
//! taskset -c 0 target/release/coop-echo serve --host 127.0.0.1 --port 25000 --udp &
//! taskset -c 1 target/release/examples/udp_flood --port 25000 --server-pid $! \
//!     --sources 100000 --rate 20000 --seconds 10
//! ```
//!
//! The first round over the sources (or the first second, if longer) warms the server's
//! table up and is not counted.

#[path = "../tests/forge/mod.rs"]
mod forge;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

use forge::{Forger, forged_source, kernel_drops};

#[derive(Parser, Debug)]
#[command(about = "Forged-source UDP load on loopback, and the server's CPU per datagram")]
struct Args {
    /// The server's UDP port, on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// The server's process id, for its CPU time.
    #[arg(long)]
    server_pid: u32,
    /// Distinct source addresses, from 127.1.0.0 on, sent from in turn.
    #[arg(long, default_value_t = 16_000)]
    sources: u32,
    /// Datagrams a second.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

/// CPU time of all the threads of `pid`, in nanoseconds.
fn cpu_ns(pid: u32) -> std::io::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let stat = std::fs::read_to_string(task?.path().join("schedstat"))?;
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let to = SocketAddr::from((Ipv4Addr::LOCALHOST, args.port));
    let mut forger = match Forger::new(to) {
        Ok(forger) => forger,
        Err(e) => {
            eprintln!("udp_flood: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sources = args.sources.max(1);
    let warm_up = u64::from(sources).max(args.rate);
    let total = warm_up + args.rate * args.seconds;
    let start = Instant::now();
    let mut sent = 0;
    let mut mark = None;
    while sent < total {
        if sent == warm_up && mark.is_none() {
            let cpu = match cpu_ns(args.server_pid) {
                Ok(cpu) => cpu,
                Err(e) => {
                    eprintln!("udp_flood: the server's CPU time: {e}");
                    return ExitCode::FAILURE;
                }
            };
            mark = Some((Instant::now(), cpu, kernel_drops(args.port)));
        }
        let due = (start.elapsed().as_secs_f64() * args.rate as f64) as u64;
        if sent >= due {
            thread::sleep(Duration::from_micros(100));
            continue;
        }
        let source = forged_source((sent % u64::from(sources)) as u32);
        if let Err(e) = forger.send_from(source, b"forged datagram") {
            eprintln!("udp_flood: {e}");
            return ExitCode::FAILURE;
        }
        sent += 1;
    }
    let Some((began, cpu_before, drops_before)) = mark else {
        return ExitCode::FAILURE;
    };
    let seconds = began.elapsed().as_secs_f64();
    // Let the server finish what its socket holds.
    thread::sleep(Duration::from_millis(200));
    let cpu = match cpu_ns(args.server_pid) {
        Ok(cpu) => cpu.saturating_sub(cpu_before),
        Err(e) => {
            eprintln!("udp_flood: the server's CPU time: {e}");
            return ExitCode::FAILURE;
        }
    };
    let measured = total - warm_up;
    let dropped = kernel_drops(args.port).saturating_sub(drops_before);
    let received = measured.saturating_sub(dropped).max(1);
    println!(
        "{} sources, {measured} datagrams in {seconds:.1} s ({:.0}/s), {dropped} dropped by \
         the kernel; server CPU {:.3} s ({:.0}% of a core): {:.2} us per datagram received",
        sources,
        measured as f64 / seconds,
        cpu as f64 / 1e9,
        cpu as f64 / 1e9 / seconds * 100.0,
        cpu as f64 / 1e3 / received as f64,
    );
    ExitCode::SUCCESS
}
