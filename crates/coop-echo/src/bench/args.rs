//! The options of `coop-echo bench`.

use std::ffi::OsString;

use clap::Args;

use crate::echo::Framing;
use crate::proxy::SendProxy;

/// Options of `coop-echo bench`.
#[derive(Debug, Args)]
#[command(after_help = "\
Exit status: 0 when every message sent got its echo; 1, after the report, when anything
went wrong (a connection that could not open or that failed, a reply that was not the
echo, no reply at all); 2 for a usage error.")]
pub struct BenchArgs {
    /// Server to load: a name or an address (IPv4 or IPv6).
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Its port.
    #[arg(long, short, value_name = "PORT", default_value_t = 25000)]
    pub port: u16,

    /// Connections to open and keep busy.
    #[arg(long, short, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub connections: u32,

    /// Bytes per message (the last one is a newline).
    #[arg(long, short, value_name = "BYTES", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub size: u32,

    /// Send for this many seconds (unless -n gives a number of messages).
    #[arg(long, short, value_name = "SECS", default_value_t = 10.0,
          conflicts_with = "requests", value_parser = positive_seconds)]
    pub duration: f64,

    /// Messages to send in all, instead of a duration.
    #[arg(long, short = 'n', value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// Messages in flight per connection, at most.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub pipeline: u32,

    /// Send at this fixed total rate (messages per second over all connections): open
    /// loop, latency measured from each message's scheduled time.
    #[arg(long, value_name = "PER_SEC", value_parser = positive_rate)]
    pub rate: Option<f64>,

    /// The prefix the server puts in front of replies.
    #[arg(long, default_value = "GOT:")]
    pub prefix: OsString,

    /// Begin each connection with a PROXY protocol header naming its own address, as a
    /// load balancer would (for a server run with --proxy-protocol). A v1 header naming its own
    /// connection is what HAProxy's health checks send: the server logs such a
    /// connection at debug level.
    #[arg(long, value_enum, value_name = "VERSION")]
    pub send_proxy: Option<SendProxy>,

    /// The server's framing: where it puts the prefix.
    #[arg(long, value_enum, default_value_t = Framing::Chunk)]
    pub framing: Framing,

    /// Also report the server's CPU time per message, read from /proc/PID.
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,

    /// A connection that moves no byte for this many seconds is stalled (counted, and
    /// closed); the load gives up when no reply at all has come for that long.
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = positive_seconds)]
    pub stall_timeout: f64,

    /// Count replies slower than this as late (e.g. 100ms): a fault of their own in the
    /// report, which fails the run as any other (see --allow-errors).
    #[arg(long, value_name = "TIME", value_parser = duration)]
    pub slo: Option<std::time::Duration>,

    /// Exit 0 even when connections were reset, closed early or stalled, or replies
    /// were late or wrong: for a load against faults on purpose, whose report says
    /// what happened (exit 1 still when no reply came back at all).
    #[arg(long)]
    pub allow_errors: bool,

    /// Run the load on N threads, each with its own runtime and its share of the
    /// connections, messages and rate; one report, from every thread's figures merged
    /// (no progress display with more than one).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: u32,

    /// Speak TLS (to a server run with --tls-cert): each connection's handshake is timed
    /// (handshakes per second), then the load runs over TLS. Give --tls-ca or --insecure.
    #[arg(long, requires = "trust")]
    pub tls: bool,

    /// Trust the certificates in this file (PEM) to sign the server's.
    #[arg(long, value_name = "PEM", requires = "tls", group = "trust")]
    pub tls_ca: Option<std::path::PathBuf>,

    /// The name the server's certificate must carry, if not HOST.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub tls_name: Option<String>,

    /// Accept any certificate: the connections are encrypted, but to whom is not checked.
    #[arg(long, requires = "tls", group = "trust")]
    pub insecure: bool,

    /// Write the run second by second to FILE: a JSON line each (replies, errors by kind,
    /// p50 and p99 latency), to plot.
    #[arg(long, value_name = "FILE")]
    pub series: Option<std::path::PathBuf>,

    /// Draw the run second by second into FILE (PNG): replies per second with each
    /// second's errors marked, and p50 and p99 latency.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// No progress display.
    #[arg(long, short)]
    pub quiet: bool,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1e6 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds in (0, 1000000]")),
    }
}

fn duration(s: &str) -> Result<std::time::Duration, String> {
    crate::units::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("'{s}' is not a duration (e.g. 100ms or 1.5s)"))
}

fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("'{s}' is not a positive rate")),
    }
}
