//! The TLS section: `coop-echo serve --tls-cert --tls-key` against the same server
//! without TLS, in the same run, with the main table's placement (server on core 0, load
//! generator on core 1): CPU per echo at the fixed rate, closed-loop throughput and
//! latency, and handshakes per second.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use crate::peer::{self, Kind, Placement, Server};
use crate::results::Samples;
use crate::{Plan, RATE, errors, number, strings};

/// Connections whose opening (TCP connect, then the handshake, eight at a time) is timed.
const HANDSHAKES: usize = 1000;

/// Connections of the closed-loop load.
const CLOSED: usize = 100;

/// A test CA and a certificate it signed for 127.0.0.1, made for the run (no key is kept
/// in the repository), in a directory removed on drop.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new() -> io::Result<Certs> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let fail = |e: rcgen::Error| io::Error::other(format!("cannot make certificates: {e}"));
        let dir = std::env::temp_dir().join(format!("coop-compare-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca =
            CertifiedIssuer::self_signed(ca, KeyPair::generate().map_err(fail)?).map_err(fail)?;
        // P-256 ECDSA, rcgen's default: what a certificate authority issues today.
        let key = KeyPair::generate().map_err(fail)?;
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .map_err(fail)?
            .signed_by(&key, &ca)
            .map_err(fail)?;
        std::fs::write(dir.join("ca.pem"), ca.pem())?;
        std::fs::write(dir.join("cert.pem"), leaf.pem())?;
        std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
        Ok(Certs { dir })
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The two servers compared.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Plain,
    Tls,
}

impl Setup {
    fn metric(self, metric: &str) -> String {
        match self {
            Setup::Plain => format!("plain tcp: {metric}"),
            Setup::Tls => format!("tls: {metric}"),
        }
    }
}

/// The section, `plan.runs` times, plain and TLS interleaved ([`crate::in_turn`]).
pub fn section(bin: &Path, plan: &Plan, samples: &mut Samples) -> io::Result<()> {
    let certs = Certs::new()?;
    for run in 1..=plan.runs {
        for setup in crate::in_turn([Setup::Plain, Setup::Tls], run) {
            let name = if setup == Setup::Tls { "tls" } else { "plain" };
            eprintln!("tls run {run}/{}: {name}", plan.runs);
            measure(setup, bin, plan, &certs, samples)?;
        }
    }
    Ok(())
}

fn measure(
    setup: Setup,
    bin: &Path,
    plan: &Plan,
    certs: &Certs,
    samples: &mut Samples,
) -> io::Result<()> {
    let (cert, key, ca) = (
        certs.path("cert.pem"),
        certs.path("key.pem"),
        certs.path("ca.pem"),
    );
    let serve: &[&str] = match setup {
        Setup::Plain => &[],
        Setup::Tls => &["--tls-cert", &cert, "--tls-key", &key],
    };
    let tls: Vec<String> = match setup {
        Setup::Plain => Vec::new(),
        Setup::Tls => strings(&["--tls", "--tls-ca", &ca]),
    };
    let server = Server::start_with(Kind::Coop, bin, &[], Placement::Core(0), serve)?;
    let with_tls = |args: &[&str]| {
        strings(args)
            .into_iter()
            .chain(tls.clone())
            .collect::<Vec<_>>()
    };
    let mut add = |metric: &str, value: f64| samples.add(Kind::Coop, &setup.metric(metric), value);

    let rate = RATE.to_string();
    let secs = plan.rate_secs.to_string();
    let report = peer::load(
        bin,
        &server,
        &with_tls(&["-c", "100", "-s", "64", "--rate", &rate, "-d", &secs]),
    )?;
    add("cpu_us", number(&report, "server_cpu_us_per_msg")?);
    add("rate_msgs", number(&report, "messages_per_sec")?);
    add("errors", errors(&report)?);

    let closed = CLOSED.to_string();
    let secs = plan.closed_secs.to_string();
    let report = peer::load(
        bin,
        &server,
        &with_tls(&["-c", &closed, "-s", "64", "-d", &secs]),
    )?;
    add("msgs", number(&report, "messages_per_sec")?);
    add("p50_us", number(&report["latency_us"], "p50")?);
    add("p99_us", number(&report["latency_us"], "p99")?);
    add("closed_cpu_us", number(&report, "server_cpu_us_per_msg")?);
    add("errors", errors(&report)?);

    if setup == Setup::Tls {
        let n = HANDSHAKES.to_string();
        let report = peer::load(bin, &server, &with_tls(&["-c", &n, "-n", &n]))?;
        add("handshakes", number(&report, "handshakes_per_sec")?);
        add("errors", errors(&report)?);
    }
    Ok(())
}

/// The TLS table: each figure over TLS, without, and their ratio.
pub fn table(samples: &Samples) -> String {
    let median = |setup: Setup, metric: &str| samples.median(Kind::Coop, &setup.metric(metric));
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## TLS\n\n\
         `coop-echo serve --tls-cert --tls-key` (rustls 0.23, ring provider, TLS 1.3, an \
         ECDSA P-256 certificate made for the run) against the same server without TLS, \
         runs interleaved (plain first, then TLS first, and so on), medians; server on \
         core 0, `coop-echo bench --tls` on core 1.\n\n\
         | | over TLS | plain TCP | TLS / plain |\n|---|---:|---:|---:|"
    );
    let rows: [(&str, &str, usize); 6] = [
        (
            "server CPU per echo, µs (30,000 msg/s, 100 conns, 64 B)",
            "cpu_us",
            2,
        ),
        (
            "throughput, msg/s (closed loop, 100 conns, 64 B)",
            "msgs",
            0,
        ),
        ("server CPU per echo, µs (same)", "closed_cpu_us", 2),
        ("p50 latency, µs (same)", "p50_us", 0),
        ("p99 latency, µs (same)", "p99_us", 0),
        ("errors, all runs and loads", "errors", 0),
    ];
    for (label, metric, digits) in rows {
        let fig = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.digits$}"));
        let (t, p) = if metric == "errors" {
            let sum = |setup: Setup| Some(samples.sum(Kind::Coop, &setup.metric(metric)));
            (sum(Setup::Tls), sum(Setup::Plain))
        } else {
            (median(Setup::Tls, metric), median(Setup::Plain, metric))
        };
        let ratio = match (t, p) {
            (Some(t), Some(p)) if p > 0.0 => format!("{:.2}", t / p),
            _ => "–".to_string(),
        };
        let _ = writeln!(md, "| {label} | {} | {} | {ratio} |", fig(t), fig(p));
    }
    let _ = writeln!(
        md,
        "| handshakes per second ({HANDSHAKES} connections opened, 8 at a time: TCP connect, \
         TLS 1.3 handshake) | {} | | |",
        median(Setup::Tls, "handshakes").map_or("–".to_string(), |v| format!("{v:.0}"))
    );
    md
}
