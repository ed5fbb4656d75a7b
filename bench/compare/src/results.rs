//! Samples, their medians, and `RESULTS.md`.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::THREADS_CLOSED;
use crate::peer::{Kind, Threaded};

/// Every figure measured, by server and metric, one entry per run.
#[derive(Default)]
pub struct Samples {
    values: BTreeMap<(Kind, String), Vec<f64>>,
}

impl Samples {
    pub fn add(&mut self, kind: Kind, metric: &str, value: f64) {
        self.values
            .entry((kind, metric.to_string()))
            .or_default()
            .push(value);
    }

    pub fn median(&self, kind: Kind, metric: &str) -> Option<f64> {
        let mut v = self.values.get(&(kind, metric.to_string()))?.clone();
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    }

    fn all(&self, kind: Kind, metric: &str) -> &[f64] {
        self.values
            .get(&(kind, metric.to_string()))
            .map_or(&[], Vec::as_slice)
    }

    pub fn sum(&self, kind: Kind, metric: &str) -> f64 {
        self.all(kind, metric).iter().sum()
    }
}

/// Whether coop meets a row's target, given the samples and the row's metric.
type Check = fn(&Samples, &str) -> Option<bool>;

/// A row of the main table: how to get the figure, and the target coop must meet.
struct Row {
    label: &'static str,
    metric: String,
    digits: usize,
    target: Option<(&'static str, Check)>,
}

fn coop_vs(samples: &Samples, metric: &str, peer: Kind) -> Option<f64> {
    Some(samples.median(Kind::Coop, metric)? / samples.median(peer, metric)?)
}

pub fn markdown(
    samples: &Samples,
    chart: &[usize],
    many: usize,
    scale: &serde_json::Value,
    command: &str,
) -> String {
    let many_at = |m: &str| format!("{m}@{many}");
    let rows = [
        Row {
            label: "user-space instructions per echo (callgrind; 100 conns, 64 B, 3,000 msg/s)",
            metric: "instructions".into(),
            digits: 0,
            target: Some(("≤ 0.33× tokio", |s, m| {
                Some(coop_vs(s, m, Kind::Tokio)? <= 0.33)
            })),
        },
        Row {
            label: "server CPU per echo, µs (30,000 msg/s, 100 conns, 64 B)",
            metric: "cpu_us".into(),
            digits: 2,
            target: Some(("≤ 1.03× floor and tokio", |s, m| {
                Some(coop_vs(s, m, Kind::Floor)? <= 1.03 && coop_vs(s, m, Kind::Tokio)? <= 1.03)
            })),
        },
        Row {
            label: "system calls per echo (same load)",
            metric: "syscalls".into(),
            digits: 3,
            target: Some(("≤ floor + 0.05", |s, m| {
                Some(s.median(Kind::Coop, m)? <= s.median(Kind::Floor, m)? + 0.05)
            })),
        },
        Row {
            label: "resident memory per idle connection, bytes",
            metric: "idle_bytes".into(),
            digits: 0,
            target: Some(("≤ 1024 (aim 256)", |s, m| {
                Some(s.median(Kind::Coop, m)? <= 1024.0)
            })),
        },
        Row {
            label: "p50 latency, µs (closed loop, 64 B)",
            metric: many_at("p50_us"),
            digits: 0,
            target: None,
        },
        Row {
            label: "p99 latency, µs (same)",
            metric: many_at("p99_us"),
            digits: 0,
            target: None,
        },
        Row {
            label: "p99 / p50 (same)",
            metric: many_at("tail"),
            digits: 2,
            target: Some(("≤ 1.5", |s, m| Some(s.median(Kind::Coop, m)? <= 1.5))),
        },
        Row {
            label: "throughput, msg/s (same)",
            metric: many_at("msgs"),
            digits: 0,
            target: None,
        },
        Row {
            label: "load generator CPU per echo, µs (30,000 msg/s)",
            metric: "client_cpu_us".into(),
            digits: 2,
            target: None,
        },
    ];

    // p99/p50 per run, so its median is the median of ratios.
    let mut samples_with_tail = Samples {
        values: samples.values.clone(),
    };
    for kind in Kind::ALL {
        let p50 = samples.all(kind, &many_at("p50_us")).to_vec();
        let p99 = samples.all(kind, &many_at("p99_us")).to_vec();
        for (a, b) in p50.iter().zip(&p99) {
            samples_with_tail.add(kind, &many_at("tail"), b / a);
        }
    }
    let s = &samples_with_tail;

    let mut md = String::new();
    let _ = writeln!(md, "# coop-echo, side by side\n");
    let _ = writeln!(md, "Written by `{command}` on {}. {}\n", today(), machine());
    let _ = writeln!(
        md,
        "Each server runs pinned to core 0, the load generator (`coop-echo bench`, which \
         checks every reply byte for byte) to core 1 (except under Threads, below). \
         Servers are measured interleaved, in an order that changes from run to run so \
         that none always comes right after the same one (coop, tokio, floor; tokio, \
         floor, coop; ...); figures are medians over the runs, with \
         {many} connections where the row says \"closed loop\". callgrind counts \
         instructions, which repeat, so it runs once per server. *tokio* is tokio's \
         current-thread runtime with the echo loop of its own example; *floor* is one \
         edge-triggered epoll loop on mio with no runtime at all.\n"
    );
    let _ = writeln!(
        md,
        "| | coop | tokio | floor | coop / tokio | coop / floor | target | met |\n\
         |---|---:|---:|---:|---:|---:|---|---|"
    );
    for row in &rows {
        let fig = |k: Kind| {
            s.median(k, &row.metric)
                .map_or("–".to_string(), |v| format!("{v:.*}", row.digits))
        };
        let ratio =
            |k: Kind| coop_vs(s, &row.metric, k).map_or("–".to_string(), |r| format!("{r:.2}"));
        let (target, met) = match &row.target {
            Some((text, check)) => (text.to_string(), verdict(check(s, &row.metric))),
            None => (String::new(), ""),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {target} | {met} |",
            row.label,
            fig(Kind::Coop),
            fig(Kind::Tokio),
            fig(Kind::Floor),
            ratio(Kind::Tokio),
            ratio(Kind::Floor),
        );
    }
    let _ = writeln!(
        md,
        "| errors, mismatched replies, failed connects (all runs) | {:.0} | {:.0} | {:.0} | | | 0 | {} |",
        s.sum(Kind::Coop, "errors"),
        s.sum(Kind::Tokio, "errors"),
        s.sum(Kind::Floor, "errors"),
        verdict(Some(s.sum(Kind::Coop, "errors") == 0.0))
    );

    let scale_errors = ["errors", "mismatches", "connect_failures"]
        .iter()
        .map(|k| scale[*k].as_u64().unwrap_or(u64::MAX))
        .fold(0u64, u64::saturating_add);
    let _ = writeln!(
        md,
        "\nScale: coop held {} connections on one thread, all loaded at once for {:.0} s: \
         {} replies verified ({:.0} msg/s), p50 {:.0} µs, p99 {:.0} µs, {} errors.\n",
        scale["connections"],
        scale["seconds"].as_f64().unwrap_or(0.0),
        scale["messages"],
        scale["messages_per_sec"].as_f64().unwrap_or(0.0),
        scale["latency_us"]["p50"].as_f64().unwrap_or(0.0),
        scale["latency_us"]["p99"].as_f64().unwrap_or(0.0),
        scale_errors
    );

    let _ = writeln!(
        md,
        "![server CPU per echo and p99 latency against connections](results.png)\n\n\
         ## Closed loop, by connection count (medians)\n\n\
         | connections | | coop | tokio | floor |\n|---:|---|---:|---:|---:|"
    );
    for &n in chart {
        for (metric, label) in [
            ("cpu_us", "server CPU per echo, µs"),
            ("p50_us", "p50, µs"),
            ("p99_us", "p99, µs"),
            ("msgs", "msg/s"),
        ] {
            let key = format!("{metric}@{n}");
            let fig = |k: Kind| s.median(k, &key).map_or("–".into(), |v| format!("{v:.1}"));
            let _ = writeln!(
                md,
                "| {n} | {label} | {} | {} | {} |",
                fig(Kind::Coop),
                fig(Kind::Tokio),
                fig(Kind::Floor)
            );
        }
    }

    md.push('\n');
    md.push_str(&threads(samples, many));
    md.push('\n');
    md.push_str(&crate::tls::table(samples));
    md.push('\n');
    md.push_str(&crate::http::table(samples, many));
    md.push_str(&every_sample(samples));
    md
}

/// What `--http-section` prints: the HTTP and WebSocket tables and their samples.
pub fn http_only(samples: &Samples, many: usize, command: &str) -> String {
    format!(
        "# coop-echo, HTTP and WebSocket section\n\nWritten by `{command}` on {}. {}\n\n{}{}",
        today(),
        machine(),
        crate::http::table(samples, many),
        every_sample(samples)
    )
}

/// What `--tls-section` prints: the TLS table and its samples.
pub fn tls_only(samples: &Samples, command: &str) -> String {
    format!(
        "# coop-echo, TLS section\n\nWritten by `{command}` on {}. {}\n\n{}{}",
        today(),
        machine(),
        crate::tls::table(samples),
        every_sample(samples)
    )
}

/// What `--threads-section` prints: the Threads table and its samples.
pub fn threads_only(samples: &Samples, many: usize, command: &str) -> String {
    format!(
        "# coop-echo, threads section\n\nWritten by `{command}` on {}. {}\n\n{}{}",
        today(),
        machine(),
        threads(samples, many),
        every_sample(samples)
    )
}

fn every_sample(samples: &Samples) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n## Every sample\n\n| server | metric | runs |\n|---|---|---|"
    );
    for ((kind, metric), values) in &samples.values {
        let list: Vec<String> = values.iter().map(|v| format!("{v:.3}")).collect();
        let _ = writeln!(md, "| {} | {metric} | {} |", kind.name(), list.join(", "));
    }
    md
}

/// A row of the Threads table: coop `--threads 2`, unpinned and pinned, against `peer`,
/// and the target each must meet, a test of (coop's median, the peer's median).
struct ThreadsRow {
    label: String,
    metric: String,
    digits: usize,
    peer: Threaded,
    target: Option<(&'static str, Versus)>,
    /// Whether the pinned server has this figure: callgrind runs a program's threads
    /// one at a time, so pinning cannot change an instruction count, and it is not
    /// counted twice.
    pinned: bool,
}

/// Whether coop meets a Threads row's target, given its median and the peer's.
type Versus = fn(f64, f64) -> bool;

/// The two ways to run coop on two threads that the Threads table holds up to each
/// row's peer and target: pinning is the one choice left to a user of `--threads 2`.
const SUBJECTS: [Threaded; 2] = [Threaded::Coop2, Threaded::Coop2Pinned];

/// The Threads section: coop on two threads, unpinned and pinned, against itself on one
/// and against tokio's multi-thread runtime.
fn threads(samples: &Samples, many: usize) -> String {
    let row = |label: &str, metric: String, digits, peer, target| ThreadsRow {
        label: label.to_string(),
        metric,
        digits,
        peer,
        target,
        pinned: true,
    };
    let mut rows = vec![
        row(
            "server CPU per echo, µs (30,000 msg/s, 100 conns, 64 B, load on 1 thread)",
            "cpu_us".into(),
            2,
            Threaded::Coop1,
            Some(("≤ 1.05×", |c, p| c / p <= 1.05)),
        ),
        row(
            "msg/s reached (same load)",
            "rate_msgs".into(),
            0,
            Threaded::Coop1,
            None,
        ),
        row(
            "system calls per echo (same load): each thread's OS poll returns fewer events at half the rate",
            "syscalls".into(),
            3,
            Threaded::Coop1,
            None,
        ),
        ThreadsRow {
            pinned: false,
            ..row(
                "user-space instructions per echo (callgrind; 100 conns, 64 B, 3,000 msg/s; \
                 server on core 0, load on core 1, as in the main table)",
                "instructions".into(),
                0,
                Threaded::Coop1,
                None,
            )
        },
    ];
    for (n, load) in crate::closed_loops(many) {
        let at = |m: &str| crate::closed_metric(m, n, load);
        let tail_target: (&'static str, Versus) = if n == THREADS_CLOSED {
            ("≤ tokio's", |c, p| c <= p)
        } else {
            ("≤ 1.5", |c, _| c <= 1.5)
        };
        let threads = if load == "1" { "thread" } else { "threads" };
        rows.extend([
            row(
                &format!(
                    "throughput, msg/s (closed loop, {n} conns, 64 B, load on {load} {threads})"
                ),
                at("msgs"),
                0,
                Threaded::Tokio2,
                (n == THREADS_CLOSED).then_some(("≥ 1.00×", |c, p| c >= p)),
            ),
            row(
                "p50 latency, µs (same)",
                at("p50_us"),
                0,
                Threaded::Tokio2,
                None,
            ),
            row(
                "p99 latency, µs (same)",
                at("p99_us"),
                0,
                Threaded::Tokio2,
                None,
            ),
            row(
                "p99 / p50 (same)",
                at("tail"),
                2,
                Threaded::Tokio2,
                Some(tail_target),
            ),
        ]);
    }

    // p99/p50 per run, so its median is the median of ratios.
    let mut s = Samples {
        values: samples.values.clone(),
    };
    for setup in SUBJECTS.into_iter().chain([Threaded::Tokio2]) {
        for row in rows.iter().filter(|r| r.metric.starts_with("tail@")) {
            let n = &row.metric["tail@".len()..]; // `10000`, or `10000/1`
            let kind = setup.kind();
            let p50 = samples
                .all(kind, &setup.metric(&format!("p50_us@{n}")))
                .to_vec();
            let p99 = samples.all(kind, &setup.metric(&format!("p99_us@{n}")));
            for (a, b) in p50.iter().zip(p99) {
                s.add(kind, &setup.metric(&row.metric), b / a);
            }
        }
    }
    let median = |setup: Threaded, metric: &str| s.median(setup.kind(), &setup.metric(metric));
    let runs = s
        .all(
            Kind::Coop,
            &Threaded::Coop2.metric(&format!("msgs@{THREADS_CLOSED}")),
        )
        .len();

    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Threads\n\n\
         `coop-echo serve --threads 2` (two runtimes on two threads, one SO_REUSEPORT \
         listener each) against `--threads 1` for the costs per echo at the main table's \
         fixed rate, and against tokio's multi-thread runtime (`tokio-echo --workers 2`) \
         in closed loop; coop's two threads unpinned, and pinned (`--pin-threads`: serving \
         thread `i` on core `i`). Every process may run on every core: **this machine has \
         {cores} cores, and the server and the load generator share them**, so the \
         server's threads compete with the load generator's for the same cores. Runs \
         interleaved ({order}; then in orders that change so that none always comes \
         right after the same one); figures are medians over {runs} runs (every sample is \
         below). The instructions per echo are counted once, as the main table counts \
         them (server on core 0, load on core 1): a count repeats where CPU time moves \
         from run to run. At {many} connections the load also runs on one thread: with \
         two, the tail moves from run to run even against coop on one thread \
         (docs/ARCHITECTURE.md, \"Every core\"). Pinned, a lone load thread shares a \
         core with a serving thread that cannot move away from it.\n",
        order = crate::in_turn(Threaded::ALL, 1)
            .map(Threaded::label)
            .join(", "),
        cores = cores(),
    );
    let _ = writeln!(
        md,
        "| | coop `--threads 2`, unpinned | pinned | against | its figure | unpinned / it | pinned / it | target | met (unpinned, pinned) |\n\
         |---|---:|---:|---|---:|---:|---:|---|---|"
    );
    for row in &rows {
        let fig = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.*}", row.digits));
        let p = median(row.peer, &row.metric);
        // `None`: a figure the column does not measure (see `ThreadsRow::pinned`).
        let c = SUBJECTS.map(|subject| {
            (subject == Threaded::Coop2 || row.pinned).then(|| median(subject, &row.metric))
        });
        let cell = |c: Option<Option<f64>>| c.map_or("n/a".to_string(), fig);
        let ratio = |c: Option<Option<f64>>| {
            c.map_or("n/a".to_string(), |c| {
                c.zip(p)
                    .map_or("–".to_string(), |(c, p)| format!("{:.2}", c / p))
            })
        };
        let (target, met) = match row.target {
            Some((text, check)) => {
                let met = c.map(|c| verdict(c.flatten().zip(p).map(|(c, p)| check(c, p))));
                (text, met.join(", "))
            }
            None => ("", String::new()),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {target} | {met} |",
            row.label,
            cell(c[0]),
            cell(c[1]),
            row.peer.label(),
            fig(p),
            ratio(c[0]),
            ratio(c[1]),
        );
    }
    let errors = |setup: Threaded| s.sum(setup.kind(), &setup.metric("errors"));
    let [unpinned, pinned] =
        SUBJECTS.map(|subject| (errors(subject), verdict(Some(errors(subject) == 0.0))));
    let _ = writeln!(
        md,
        "| errors, mismatched replies, failed connects (all runs) | {:.0} | {:.0} | {} | {:.0} | | | 0 | {}, {} |",
        unpinned.0,
        pinned.0,
        Threaded::Tokio2.label(),
        errors(Threaded::Tokio2),
        unpinned.1,
        pinned.1,
    );
    let _ = writeln!(
        md,
        "\ncoop `--threads 1` had {:.0} errors, mismatched replies or failed connects.",
        errors(Threaded::Coop1)
    );
    md
}

/// A target's cell: met, not met, or no figure to judge.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "–",
    }
}

/// The machine's cores (not available_parallelism: this runs pinned to one core).
fn cores() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0)
}

fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// One line naming the machine: CPU model, cores, kernel, compiler.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cores();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let rustc = std::process::Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "Machine: {cpu}, {cores} cores, Linux {}, {rustc}.",
        kernel.trim()
    )
}
