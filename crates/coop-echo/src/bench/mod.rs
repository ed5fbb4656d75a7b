//! `coop-echo bench`: a load generator on the coop runtime.
//!
//! Every connection is one task that keeps up to `--pipeline` messages in flight, checks
//! every reply byte for byte (see [`verify`]) and records each round trip's latency in
//! one histogram. Closed loop by default: a connection sends its next message when a
//! reply comes back. With `--rate`, open loop: each connection sends on a fixed
//! schedule, and latency is measured from the *scheduled* time, so a server that stalls
//! cannot hide its tail behind the load generator's patience (the wrk2 method).
//!
//! The parts, each using only those below it: [`measure()`] splits the load over threads
//! and merges their figures (`measure.rs`); each thread opens its connections
//! (`connect.rs`), then runs its share (`part.rs`), watched for progress and stalls
//! (`progress.rs`). Each connection is one loop (`connection.rs`) over its `Wire`
//! (`wire.rs`, TCP or TLS), checking replies ([`verify`]), sharing one `Load` with the
//! others (`load.rs`: what is left to send, the counts, the pacer) and, in open loop,
//! one schedule (`pace.rs`). The options are in `args.rs`; the figures and how they are
//! shown in `report.rs`; CPU time from /proc in `cpu.rs`.

mod args;
mod connect;
mod connection;
mod cpu;
mod load;
mod measure;
mod pace;
mod part;
mod progress;
mod report;
mod series;
pub mod verify;
mod wire;

use std::process::ExitCode;

pub use args::BenchArgs;
pub use measure::measure;
pub use report::{Faults, Latency, Report, Tally};

/// Runs the load and prints the report. Exit status 1, after the report, if anything
/// went wrong: a load that counts its errors and still succeeds hides a broken server
/// from a script.
pub fn run(args: BenchArgs) -> ExitCode {
    match measure(&args) {
        Ok(report) => {
            if args.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(json) => println!("{json}"),
                    Err(e) => eprintln!("coop-echo: cannot write the report as JSON: {e}"),
                }
            } else {
                println!("{report}");
            }
            let errors =
                report.mismatches + report.errors + report.connect_failures + report.faults.late;
            if (errors > 0 && !args.allow_errors) || report.messages == 0 {
                // The report may have gone to a file or a pipe: the reason goes to stderr.
                let late = (report.faults.late > 0)
                    .then(|| format!("{} replies slower than --slo", report.faults.late));
                let reason = report
                    .first_error
                    .clone()
                    .or(late)
                    .unwrap_or_else(|| "no reply came back".to_string());
                crate::service::fail(format_args!("bench failed: {reason}"))
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => crate::service::fail(format_args!("{e}")),
    }
}
