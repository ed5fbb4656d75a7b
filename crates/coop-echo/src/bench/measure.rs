//! A whole run: the load split over threads, then their figures merged into one report.

use std::io;
use std::net::ToSocketAddrs;
use std::sync::Barrier;
use std::time::Duration;

use super::args::BenchArgs;
use super::cpu::{cpu_time_of, thread_cpu_time};
use super::part::{Part, PartOutcome, Run};
use super::report::{HANDSHAKES_TIMED, Latency, Report, Tally};
use super::series;
use super::verify::Tape;
use crate::tls::ClientTls;

/// Runs the load described by `args` and measures it.
pub fn measure(args: &BenchArgs) -> io::Result<Report> {
    let target = if args.host.contains(':') {
        format!("[{}]:{}", args.host, args.port)
    } else {
        format!("{}:{}", args.host, args.port)
    };
    let addr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot resolve {target}: {e}")))?
        .next()
        .ok_or_else(|| io::Error::other(format!("{target} resolves to no address")))?;
    let prefix = args.prefix.clone().into_encoded_bytes();
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if Tape::new(args.size as usize, &prefix).is_none() {
        return Err(invalid(
            "the prefix uses every letter and digit: no bytes left to send",
        ));
    }
    let tls = match (args.tls, &args.tls_ca) {
        (false, _) => None,
        (true, None) if !args.insecure => {
            return Err(invalid(crate::tls::NO_TRUST));
        }
        (true, ca) => Some(
            ClientTls::new(ca.as_deref(), args.tls_name.as_deref(), &target)
                .map_err(|e| invalid(&e))?,
        ),
    };
    let threads = args.threads.max(1) as u64;
    let connections = u64::from(args.connections);
    if threads > connections {
        return Err(invalid(&format!(
            "--threads {threads} needs at least as many connections (-c {connections})"
        )));
    }
    let duration = Duration::from_secs_f64(args.duration);
    // Open loop for a duration sends exactly rate × duration messages (their slots
    // fall within it): a count, rather than a deadline that a late send could miss.
    let budget = match (args.requests, args.rate) {
        (Some(n), _) => Some(n),
        (None, Some(rate)) => Some(((rate * args.duration).round() as u64).max(1)),
        (None, None) => None,
    };
    if budget.is_some_and(|n| n < threads) {
        return Err(invalid(&format!(
            "--threads {threads} needs at least as many messages to send"
        )));
    }
    // Thread `i`'s share of `total`: the remainder goes to the first ones.
    let share = |total: u64, i: u64| total / threads + u64::from(i < total % threads);
    let parts: Vec<Part> = (0..threads)
        .map(|i| {
            let total = budget;
            let budget = budget.map(|n| share(n, i));
            Part {
                connections: share(connections, i) as usize,
                budget,
                // The rate in proportion to the messages: each thread's schedule spans
                // the same time.
                rate: args
                    .rate
                    .zip(budget.zip(total))
                    .map(|(rate, (mine, all))| rate * mine as f64 / all as f64),
                show_progress: threads == 1 && !args.quiet,
            }
        })
        .collect();
    let server_cpu_start = args.server_pid.and_then(cpu_time_of);
    let go = Barrier::new(parts.len());
    let run = |part| Run {
        args,
        addr,
        target: &target,
        prefix: &prefix,
        part,
        duration,
        go: &go,
    };
    // Each load thread's own CPU time, read by itself before it ends: the process's
    // tasks in /proc are only the threads still alive.
    let timed = |part| {
        let start = thread_cpu_time();
        let outcome = run(part).run(&tls);
        let cpu = thread_cpu_time()
            .zip(start)
            .map(|(end, start)| end.saturating_sub(start));
        (outcome, cpu)
    };
    let outcomes: Vec<(io::Result<PartOutcome>, Option<Duration>)> = if parts.len() == 1 {
        parts.iter().map(timed).collect()
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> = parts
                .iter()
                .map(|part| {
                    let timed = &timed;
                    scope.spawn(move || timed(part))
                })
                .collect();
            running
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|_| (Err(io::Error::other("a load thread panicked")), None))
                })
                .collect()
        })
    };
    let client_cpu = outcomes
        .iter()
        .map(|(_, cpu)| *cpu)
        .sum::<Option<Duration>>();
    let outcomes = outcomes.into_iter().map(|(outcome, _)| outcome).collect();
    let server_cpu = args
        .server_pid
        .and_then(cpu_time_of)
        .zip(server_cpu_start)
        .map(|(end, start)| end.saturating_sub(start));

    let (tally, seconds, handshakes) = merge(outcomes, connections)?;
    if args.threads > 1 && tally.connect_failures > 0 && !args.quiet {
        eprintln!(
            "coop-echo: {} of {connections} connections failed: {}",
            tally.connect_failures,
            tally.first_error.as_deref().unwrap_or("(no reason)")
        );
    }
    if let Some(file) = &args.series {
        series::write_lines(&tally.series, file)?;
    }
    if let Some(file) = &args.plot {
        let title = format!("coop-echo bench {target}: {} connections", args.connections);
        series::plot(&tally.series, &title, file)?;
    }
    // No reply verified, no figure per reply: a division by 1 would invent one.
    let measured = tally.messages > 0;
    let per_msg = |cpu: Duration| cpu.as_secs_f64() * 1e6 / tally.messages as f64;
    Ok(Report {
        target: target.clone(),
        connections: args.connections,
        size: args.size,
        pipeline: args.pipeline,
        rate: args.rate,
        seconds,
        messages: tally.messages,
        messages_per_sec: tally.messages as f64 / seconds,
        mb_per_sec: tally.messages as f64 * f64::from(args.size) / seconds / 1e6,
        bytes_received: tally.bytes_received,
        latency_us: measured.then(|| Latency::of(&tally.latency)),
        mismatches: tally.mismatches,
        errors: tally.errors,
        connect_failures: tally.connect_failures,
        faults: tally.faults,
        connect_us: (!tally.connect.is_empty()).then(|| Latency::of(&tally.connect)),
        first_reply_us: (!tally.first_reply.is_empty()).then(|| Latency::of(&tally.first_reply)),
        first_error: tally.first_error.clone(),
        client_cpu_us_per_msg: client_cpu.filter(|_| measured).map(per_msg),
        server_cpu_us_per_msg: server_cpu.filter(|_| measured).map(per_msg),
        tls: args.tls,
        // A rate over a few handshakes is mostly one-off setup, and varies threefold.
        handshakes_per_sec: handshakes.filter(|_| args.tls && args.connections >= HANDSHAKES_TIMED),
    })
}

/// Every thread's figures as one: the histograms merged, the counts summed, the run as
/// long as its longest thread, and the connections opened per second of the longest
/// connecting (`None` if none opened). Fails, as one thread does, if no connection opened
/// at all (with the first reason), or if a thread failed otherwise.
fn merge(
    outcomes: Vec<io::Result<PartOutcome>>,
    connections: u64,
) -> io::Result<(Tally, f64, Option<f64>)> {
    let mut tally = Tally::new();
    let mut seconds: f64 = 0.0;
    let mut connecting: f64 = 0.0;
    let mut connected = 0;
    for outcome in outcomes {
        let part = outcome?;
        seconds = seconds.max(part.seconds);
        connecting = connecting.max(part.connecting);
        connected += part.connected;
        tally.merge(part.tally);
    }
    if connected == 0 && connections > 0 {
        let why = tally
            .first_error
            .take()
            .unwrap_or_else(|| "no connection opened".into());
        return Err(io::Error::other(why));
    }
    let per_sec = (connected > 0 && connecting > 0.0).then(|| connected as f64 / connecting);
    Ok((tally, seconds, per_sec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(messages: u64, connected: usize, failed: u64, seconds: f64) -> PartOutcome {
        let mut tally = Tally::new();
        for _ in 0..messages {
            tally.record(Duration::from_micros(100));
        }
        tally.connect_failures = failed;
        if failed > 0 {
            tally.fail("cannot connect to 127.0.0.1:9: refused");
        }
        PartOutcome {
            tally,
            seconds,
            connecting: seconds / 10.0,
            connected,
        }
    }

    /// A thread none of whose share connected is counted, not the end of the run (found
    /// by a review: the whole run failed, the other threads' load thrown away).
    #[test]
    fn a_thread_that_could_not_connect_is_counted_in_the_merged_report() {
        let outcomes = vec![Ok(part(0, 0, 3, 0.0)), Ok(part(500, 3, 0, 2.5))];
        let (tally, seconds, opened_per_sec) = merge(outcomes, 6).unwrap();
        assert_eq!(opened_per_sec, Some(3.0 / 0.25));
        assert_eq!(tally.messages, 500);
        assert_eq!(tally.latency.len(), 500);
        assert_eq!(tally.connect_failures, 3);
        assert_eq!(seconds, 2.5);
        assert!(tally.first_error.unwrap().contains("cannot connect"));
    }

    #[test]
    fn no_connection_at_all_fails_with_the_first_reason() {
        let outcomes = vec![Ok(part(0, 0, 2, 0.0)), Ok(part(0, 0, 2, 0.0))];
        let e = merge(outcomes, 4).unwrap_err();
        assert!(
            e.to_string().contains("cannot connect to 127.0.0.1:9"),
            "{e}"
        );
    }
}
