//! What a load run measured, and how it is shown.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::series::Second;

/// Connections below which no handshake rate is reported: over a few, one-off setup
/// dominates it.
pub(super) const HANDSHAKES_TIMED: u32 = 100;

/// Counters the connections add to as they go.
#[derive(Debug)]
pub struct Tally {
    /// Round-trip latency of every verified reply, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Replies received and verified.
    pub messages: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Reply bytes received (prefixes included).
    pub bytes_received: u64,
    /// Replies that were not the echo of what was sent (their connection is closed).
    pub mismatches: u64,
    /// Connections that failed after connecting (reset, early EOF, no reply in time).
    pub errors: u64,
    /// Connections that could not be opened.
    pub connect_failures: u64,
    /// The failures told apart.
    pub faults: Faults,
    /// Connections that failed otherwise (a wrong reply among them).
    pub other_errors: u64,
    /// How long each connection took to open (with its PROXY header and TLS
    /// handshake), in nanoseconds.
    pub connect: Histogram<u64>,
    /// From the load's start to each connection's first verified reply, in nanoseconds.
    pub first_reply: Histogram<u64>,
    /// With `--series` or `--plot`: the latency of the second under way.
    pub second: Option<Histogram<u64>>,
    /// With `--series` or `--plot`: the seconds gone.
    pub series: Vec<Second>,
    /// The first failure, to show the user.
    pub first_error: Option<String>,
}

/// What went wrong, told apart: what a server's faults (or a proxy's) look like from the
/// client.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Faults {
    /// Connections reset by the server (at connect or later).
    pub reset: u64,
    /// Connections the server closed while replies were owed.
    pub closed: u64,
    /// Connections that moved no byte for `--stall-timeout`.
    pub stalled: u64,
    /// Replies slower than `--slo`.
    pub late: u64,
}

impl Faults {
    /// What came after `earlier`.
    pub(super) fn since(self, earlier: Faults) -> Faults {
        Faults {
            reset: self.reset - earlier.reset,
            closed: self.closed - earlier.closed,
            stalled: self.stalled - earlier.stalled,
            late: self.late - earlier.late,
        }
    }

    pub(super) fn merge(&mut self, other: Faults) {
        self.reset += other.reset;
        self.closed += other.closed;
        self.stalled += other.stalled;
        self.late += other.late;
    }

    /// Any at all.
    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

impl Tally {
    pub(crate) fn new() -> Self {
        Tally {
            // 1 ns .. 100 s at three significant figures: a fixed-size array, so recording
            // never allocates.
            latency: histogram(),
            messages: 0,
            bytes_sent: 0,
            bytes_received: 0,
            mismatches: 0,
            errors: 0,
            connect_failures: 0,
            faults: Faults::default(),
            other_errors: 0,
            connect: histogram(),
            first_reply: histogram(),
            second: None,
            series: Vec::new(),
            first_error: None,
        }
    }

    /// A tally that also keeps the run second by second.
    pub(crate) fn with_series() -> Self {
        Tally {
            second: Some(histogram()),
            ..Tally::new()
        }
    }

    /// Records `duration` in `histogram`, in nanoseconds (at least 1, at most its top).
    #[inline]
    pub(crate) fn record_in(histogram: &mut Histogram<u64>, duration: Duration) {
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        histogram.saturating_record(ns.max(1));
    }

    /// A verified reply, `latency` after its send.
    pub(crate) fn record(&mut self, latency: Duration) {
        Self::record_in(&mut self.latency, latency);
        if let Some(second) = &mut self.second {
            Self::record_in(second, latency);
        }
        self.messages += 1;
    }

    /// Adds another thread's counts to these: the histograms merged, the rest summed;
    /// the first failure stays the first one seen.
    pub(crate) fn merge(&mut self, other: Tally) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.messages += other.messages;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
        self.mismatches += other.mismatches;
        self.errors += other.errors;
        self.connect_failures += other.connect_failures;
        self.faults.merge(other.faults);
        self.other_errors += other.other_errors;
        let _ = self.connect.add(&other.connect);
        let _ = self.first_reply.add(&other.first_reply);
        for (at, second) in other.series.into_iter().enumerate() {
            match self.series.get_mut(at) {
                Some(mine) => mine.merge(&second),
                None => self.series.push(second),
            }
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub(crate) fn fail(&mut self, what: impl fmt::Display) {
        if self.first_error.is_none() {
            self.first_error = Some(what.to_string());
        }
    }
}

/// 1 ns .. 100 s at three significant figures: a fixed-size array, so recording never
/// allocates.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3)
        .unwrap_or_else(|e| unreachable!("constant histogram bounds: {e}"))
}

/// The outcome of a run, as printed and as `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `host:port` of the server.
    pub target: String,
    /// Connections asked for.
    pub connections: u32,
    /// Bytes per message.
    pub size: u32,
    /// Messages in flight per connection, at most.
    pub pipeline: u32,
    /// The fixed total send rate, if open loop.
    pub rate: Option<f64>,
    /// From the first send to the last reply.
    pub seconds: f64,
    /// Verified replies.
    pub messages: u64,
    /// Verified replies per second.
    pub messages_per_sec: f64,
    /// Payload megabytes (10^6) per second, each way.
    pub mb_per_sec: f64,
    /// Reply bytes received (prefixes included).
    pub bytes_received: u64,
    /// Latency percentiles, in microseconds; `None` if no reply was verified.
    pub latency_us: Option<Latency>,
    /// Replies that were not the echo of what was sent.
    pub mismatches: u64,
    /// Connections that failed after connecting.
    pub errors: u64,
    /// Connections that could not be opened.
    pub connect_failures: u64,
    /// The failures told apart (a connection reset at connect counts in both).
    pub faults: Faults,
    /// Connect time (with the PROXY header and TLS handshake) percentiles, in
    /// microseconds; `None` if none opened.
    pub connect_us: Option<Latency>,
    /// Time from the load's start to each connection's first verified reply,
    /// percentiles in microseconds; `None` if no reply was verified.
    pub first_reply_us: Option<Latency>,
    /// The first failure seen.
    pub first_error: Option<String>,
    /// This load generator's CPU time (user + system) per verified reply, in µs; `None`
    /// if no reply was verified (or /proc cannot say).
    pub client_cpu_us_per_msg: Option<f64>,
    /// The server's CPU time per verified reply, in µs, if `--server-pid` was given and
    /// a reply was verified.
    pub server_cpu_us_per_msg: Option<f64>,
    /// The load ran over TLS.
    pub tls: bool,
    /// Over TLS: connections opened, handshake included, per second of the time it took
    /// to open them all (handshakes run a few at a time per load thread); given only for
    /// `HANDSHAKES_TIMED` connections or more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handshakes_per_sec: Option<f64>,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest.
    pub max: f64,
}

impl Latency {
    pub(crate) fn of(h: &Histogram<u64>) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match self.rate {
            Some(rate) => format!("open loop at {rate} msg/s"),
            None => "closed loop".to_string(),
        };
        let connections = crate::plural::count(self.connections.into(), "connection");
        // Tenths of a second, unless that would round a short run to nothing.
        let precision = if self.seconds < 1.0 { 3 } else { 1 };
        let over = if self.tls { " over TLS" } else { "" };
        writeln!(
            f,
            "{}{over}: {connections}, {}-byte messages, pipeline {}, {mode}, {:.precision$} s",
            self.target, self.size, self.pipeline, self.seconds
        )?;
        match self.handshakes_per_sec {
            Some(rate) => writeln!(f, "  handshakes {rate:.0}/s (opening the connections)")?,
            None if self.tls => writeln!(
                f,
                "  handshakes no rate over so few connections (-c {} or more gives one)",
                HANDSHAKES_TIMED
            )?,
            None => {}
        }
        writeln!(
            f,
            "  messages   {} ({:.0} msg/s, {:.2} MB/s each way)",
            self.messages, self.messages_per_sec, self.mb_per_sec
        )?;
        if let Some(l) = &self.latency_us {
            writeln!(
                f,
                "  latency    p50 {:.1} µs  p90 {:.1} µs  p99 {:.1} µs  p99.9 {:.1} µs  max {:.1} µs",
                l.p50, l.p90, l.p99, l.p999, l.max
            )?;
        }
        let us = |l: &Latency| {
            format!(
                "p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
                l.p50, l.p99, l.max
            )
        };
        if let Some(l) = &self.connect_us {
            writeln!(f, "  connect    {}", us(l))?;
        }
        if let Some(l) = &self.first_reply_us {
            writeln!(f, "  1st reply  {}", us(l))?;
        }
        writeln!(
            f,
            "  errors     {} (mismatched replies {}, connect failures {})",
            self.errors, self.mismatches, self.connect_failures
        )?;
        let Faults {
            reset,
            closed,
            stalled,
            late,
        } = self.faults;
        if self.faults.any() {
            writeln!(
                f,
                "  faults     reset {reset}, closed early {closed}, stalled {stalled}, late {late}"
            )?;
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "  first      {e}")?;
        }
        // CPU time is counted in clock ticks: a run shorter than one shows none.
        let per_msg = |us: f64| {
            if us > 0.0 {
                format!("{us:.2} µs/msg")
            } else {
                "too short a run to measure".to_string()
            }
        };
        match (self.client_cpu_us_per_msg, self.server_cpu_us_per_msg) {
            (Some(client), Some(server)) => write!(
                f,
                "  CPU        client {}, server {}",
                per_msg(client),
                per_msg(server)
            ),
            (Some(client), None) => write!(f, "  CPU        client {}", per_msg(client)),
            (None, Some(server)) => write!(f, "  CPU        server {}", per_msg(server)),
            (None, None) if self.messages == 0 => write!(f, "  CPU        no reply to divide by"),
            (None, None) => write!(f, "  CPU        not known (no /proc)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of one connection and a few messages reads as one: no "1 connections", no
    /// "0.0 s", no CPU figure of zero.
    #[test]
    fn a_short_run_reads_right() {
        let report = Report {
            target: "127.0.0.1:25000".into(),
            connections: 1,
            size: 1,
            pipeline: 1,
            rate: None,
            seconds: 0.012,
            messages: 5,
            messages_per_sec: 416.0,
            mb_per_sec: 0.0,
            bytes_received: 25,
            latency_us: None,
            mismatches: 0,
            errors: 0,
            connect_failures: 0,
            faults: Faults::default(),
            connect_us: None,
            first_reply_us: None,
            first_error: None,
            client_cpu_us_per_msg: Some(0.0),
            server_cpu_us_per_msg: None,
            tls: false,
            handshakes_per_sec: None,
        };
        let text = report.to_string();
        assert!(text.contains(": 1 connection, "), "{text}");
        assert!(text.contains("closed loop, 0.012 s"), "{text}");
        assert!(text.contains("client too short a run to measure"), "{text}");
        let long = Report {
            connections: 100,
            seconds: 10.04,
            client_cpu_us_per_msg: Some(21.5),
            ..report
        };
        let text = long.to_string();
        assert!(text.contains(": 100 connections, "), "{text}");
        assert!(text.contains("closed loop, 10.0 s"), "{text}");
        assert!(text.contains("client 21.50 µs/msg"), "{text}");
    }
}
