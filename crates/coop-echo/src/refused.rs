//! Warnings about clients turned away at the door (a bad PROXY header, a failed TLS
//! handshake, one over `--max-connections-per-source`), kept from flooding the log: one
//! client that connects and fails in a loop would otherwise write a line each time,
//! `--quiet` or not, tens of thousands a second.
//!
//! Each serving thread keeps, for each [`Reason`], a tally: the first [`IN_FULL`]
//! refusals of an interval are logged in full, as they always were; past that they are
//! held back (each still at debug level, in the same words), and at the end of the
//! interval one line says how many there were, from how many client addresses, and the
//! last of them. While refusals go on, that line comes once per [`INTERVAL`]; after an
//! interval without one, the next are in full again. What is held back at a stop is
//! summed up then. Every refusal is counted, for `/metrics` ([`Counts`]).
//!
//! Per thread, as everything else of a connection is: nothing is shared between threads
//! for it, so `--threads N` may log N times as much.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::plural::count;

/// Refusals of one reason logged in full in an interval, before the rest are summed up:
/// a few clients that fail (a probe, a misconfigured peer) are each named, as before.
pub const IN_FULL: u32 = 10;

/// How often, at most, a summary line comes for one reason (per serving thread).
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Client addresses told apart in a summary's count; past it, the line says "more
/// than". Bounds what a tally holds whatever the number of clients.
const DISTINCT: usize = 256;

/// Why a client was turned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Its TLS handshake failed (not TLS, an alert, closed, or not done in time).
    TlsHandshake,
    /// With `--proxy-protocol`: no valid PROXY header, or not in time.
    ProxyHeader,
    /// Its address had `--max-connections-per-source` connections open already.
    PerSource,
}

impl Reason {
    /// Every reason, in the order [`Counts`] keeps them.
    pub const ALL: [Reason; 3] = [Reason::TlsHandshake, Reason::ProxyHeader, Reason::PerSource];

    /// Its name in `/metrics` (the `reason` label).
    pub fn label(self) -> &'static str {
        match self {
            Reason::TlsHandshake => "tls_handshake",
            Reason::ProxyHeader => "proxy_header",
            Reason::PerSource => "per_source",
        }
    }

    /// What a summary line says it counts.
    fn what(self) -> &'static str {
        match self {
            Reason::TlsHandshake => "TLS handshake failures",
            Reason::ProxyHeader => "Connections refused for their PROXY header",
            Reason::PerSource => "Connections refused over --max-connections-per-source",
        }
    }
}

/// One thread's refusals so far, by reason: every one, whether logged in full or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts([u64; Reason::ALL.len()]);

impl Counts {
    /// Refusals for `reason`.
    pub fn get(&self, reason: Reason) -> u64 {
        self.0[reason as usize]
    }

    /// Each reason with its count.
    pub fn by_reason(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .into_iter()
            .map(|reason| (reason, self.get(reason)))
    }

    /// `self` and `other` added up.
    pub fn plus(mut self, other: &Counts) -> Counts {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine += theirs;
        }
        self
    }
}

/// What one reason's refusals came to on this thread: which are logged in full, and
/// what is held back for the next summary.
#[derive(Debug, Default)]
struct Tally {
    /// When the interval began: at its first refusal, or at the last summary.
    since: Option<Instant>,
    /// Refusals logged in full in this interval.
    in_full: u32,
    /// A summary is due at the interval's end (a task waits for it); until then every
    /// refusal is held back.
    summing: bool,
    /// Refusals held back since the interval began.
    held: u64,
    /// Their client addresses, up to `DISTINCT`.
    sources: HashSet<IpAddr>,
    /// Some of them were not in `sources`, which was full.
    more_sources: bool,
    /// The last one held back: `ADDR: REASON`.
    last: String,
}

/// What to do with a refusal.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    /// Log it in full.
    InFull,
    /// Held back: counted for the summary, which is due at `summary` if this is the
    /// interval's first held back (a task must wait for it).
    Held { summary: Option<Instant> },
}

/// A summary line's figures.
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    held: u64,
    /// Over how long (rounded to whole seconds, at least 1).
    secs: u64,
    /// `3 clients`, `more than 256 clients`.
    clients: String,
    last: String,
}

impl Tally {
    /// A refusal of `client`, for `why`, at `now`, in intervals of `interval`.
    fn note(
        &mut self,
        now: Instant,
        interval: Duration,
        client: SocketAddr,
        why: &dyn fmt::Display,
    ) -> Note {
        let mut summary = None;
        if !self.summing {
            let since = match self.since {
                Some(since) if now.saturating_duration_since(since) < interval => since,
                _ => {
                    self.in_full = 0;
                    *self.since.insert(now)
                }
            };
            if self.in_full < IN_FULL {
                self.in_full += 1;
                return Note::InFull;
            }
            self.summing = true;
            summary = Some(since + interval);
        }
        self.held += 1;
        let ip = client.ip();
        if self.sources.len() < DISTINCT {
            self.sources.insert(ip);
        } else if !self.sources.contains(&ip) {
            self.more_sources = true;
        }
        self.last.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.last, "{client}: {why}");
        Note::Held { summary }
    }

    /// The summary due at `now`, if anything was held back since the interval began;
    /// then a new interval begins, in which refusals are held back again. `None` if
    /// nothing was: the refusals have stopped, and the next is logged in full.
    fn summary(&mut self, now: Instant) -> Option<Summary> {
        if self.held == 0 {
            *self = Tally::default();
            return None;
        }
        let since = self.since.unwrap_or(now);
        let secs = now.saturating_duration_since(since).as_secs_f64().round();
        let clients = if self.more_sources {
            format!("more than {DISTINCT} clients")
        } else {
            count(self.sources.len() as u64, "client")
        };
        let summary = Summary {
            held: std::mem::take(&mut self.held),
            secs: (secs as u64).max(1),
            clients,
            last: std::mem::take(&mut self.last),
        };
        // Let the addresses go: a tally holds them only while it counts.
        self.sources = HashSet::new();
        self.more_sources = false;
        self.since = Some(now);
        Some(summary)
    }
}

impl Summary {
    fn log(&self, reason: Reason) {
        let Summary {
            held,
            secs,
            clients,
            last,
        } = self;
        let what = reason.what();
        tracing::warn!("{what}: {held} more in the last {secs} s, from {clients} (last: {last})");
    }
}

/// This thread's tallies and counts.
#[derive(Debug)]
struct Tallies {
    counts: Counts,
    each: [Tally; Reason::ALL.len()],
    /// [`INTERVAL`], but in tests.
    interval: Duration,
}

impl Default for Tallies {
    fn default() -> Self {
        Tallies {
            counts: Counts::default(),
            each: Default::default(),
            interval: INTERVAL,
        }
    }
}

thread_local! {
    static TALLIES: RefCell<Tallies> = RefCell::default();
}

/// Counts a refusal of `client` for `why`, on this serving thread: `true` if it is to
/// be logged in full, at warn level, now; `false` if it is held back for a summary
/// (log it at debug level, then). Call it from a task of the thread's runtime: a
/// summary due is waited for by a task it starts.
pub(crate) fn tally(reason: Reason, client: SocketAddr, why: &dyn fmt::Display) -> bool {
    let now = coop::time::now();
    let note = TALLIES.with_borrow_mut(|tallies| {
        tallies.counts.0[reason as usize] += 1;
        let interval = tallies.interval;
        tallies.each[reason as usize].note(now, interval, client, why)
    });
    match note {
        Note::InFull => true,
        Note::Held { summary: None } => false,
        Note::Held { summary: Some(due) } => {
            drop(coop::spawn_named(
                "refusal summaries",
                summaries(reason, due),
            ));
            false
        }
    }
}

/// Logs `reason`'s summary at `due`, and one each interval after while refusals go on.
async fn summaries(reason: Reason, mut due: Instant) {
    loop {
        coop::time::sleep_until(due).await;
        let now = coop::time::now();
        let (summary, interval) = TALLIES.with_borrow_mut(|tallies| {
            let summary = tallies.each[reason as usize].summary(now);
            (summary, tallies.interval)
        });
        match summary {
            Some(summary) => summary.log(reason),
            None => return,
        }
        due = now + interval;
    }
}

/// Logs what this thread holds back now, each reason's summary (at a stop: it would
/// otherwise go unsaid).
pub fn summarise_now() {
    let now = coop::time::now();
    for reason in Reason::ALL {
        let summary = TALLIES.with_borrow_mut(|tallies| {
            let tally = &mut tallies.each[reason as usize];
            if tally.held == 0 {
                return None;
            }
            tally.summary(now)
        });
        if let Some(summary) = summary {
            summary.log(reason);
        }
    }
}

/// This thread's refusals so far.
pub fn counts() -> Counts {
    TALLIES.with_borrow(|tallies| tallies.counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn the_first_few_in_full_then_one_summary_per_interval() {
        let mut tally = Tally::default();
        let start = Instant::now();
        for i in 0..IN_FULL {
            assert_eq!(
                tally.note(start, INTERVAL, client([127, 0, 0, 1], i as u16), &"bad"),
                Note::InFull
            );
        }
        let at = start + Duration::from_secs(1);
        assert_eq!(
            tally.note(at, INTERVAL, client([127, 0, 0, 1], 1), &"bad"),
            Note::Held {
                summary: Some(start + INTERVAL)
            },
            "the first held back asks for the summary"
        );
        for i in 0..999u32 {
            let ip = [10, 0, (i % 3) as u8, 1];
            assert_eq!(
                tally.note(at, INTERVAL, client(ip, 7), &"worse"),
                Note::Held { summary: None }
            );
        }
        let summary = tally.summary(start + INTERVAL).unwrap();
        assert_eq!(
            summary,
            Summary {
                held: 1000,
                secs: 10,
                clients: "4 clients".into(),
                last: "10.0.2.1:7: worse".into(),
            }
        );
        // Still coming: held back, summed up at the next interval's end.
        let later = start + INTERVAL + Duration::from_secs(3);
        assert_eq!(
            tally.note(later, INTERVAL, client([127, 0, 0, 1], 1), &"bad"),
            Note::Held { summary: None }
        );
        let next = tally.summary(start + INTERVAL * 2).unwrap();
        assert_eq!((next.held, next.clients.as_str()), (1, "1 client"));
        // A quiet interval: no line, and the next refusal is in full again.
        assert_eq!(tally.summary(start + INTERVAL * 3), None);
        let after = start + INTERVAL * 3 + Duration::from_secs(1);
        assert_eq!(
            tally.note(after, INTERVAL, client([127, 0, 0, 1], 1), &"bad"),
            Note::InFull
        );
    }

    #[test]
    fn a_few_each_interval_are_all_in_full() {
        let mut tally = Tally::default();
        let start = Instant::now();
        for interval in 0..5u32 {
            let at = start + INTERVAL * interval;
            for i in 0..IN_FULL {
                let now = at + Duration::from_millis(u64::from(i));
                assert_eq!(
                    tally.note(now, INTERVAL, client([127, 0, 0, 1], 1), &"bad"),
                    Note::InFull
                );
            }
        }
    }

    #[test]
    fn the_addresses_counted_are_bounded() {
        let mut tally = Tally::default();
        let start = Instant::now();
        for i in 0..(IN_FULL + 100_000) {
            tally.note(start, INTERVAL, client(i.to_be_bytes(), 1), &"bad");
        }
        assert!(tally.sources.len() <= DISTINCT);
        let summary = tally.summary(start + INTERVAL).unwrap();
        assert_eq!(summary.held, 100_000);
        assert_eq!(summary.clients, format!("more than {DISTINCT} clients"));
        assert_eq!(tally.sources.capacity(), 0, "let go after the summary");
    }

    /// The log lines a subscriber wrote, for a test.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn summaries(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines()
                .filter(|l| l.contains(" more in the last "))
                .map(str::to_string)
                .collect()
        }
    }

    /// Waits, a quarter interval at a time, until `captured` holds `n` summaries: bounded.
    async fn summaries_logged(captured: &Captured, n: usize, interval: Duration) -> Vec<String> {
        let deadline = coop::time::now() + Duration::from_secs(20);
        loop {
            let summaries = captured.summaries();
            if summaries.len() >= n || coop::time::now() > deadline {
                return summaries;
            }
            coop::time::sleep(interval / 4).await;
        }
    }

    /// The timer's side, in a runtime, with a short interval: a summary at the end of
    /// the first interval, one each interval while refusals go on, none once they have
    /// stopped, and then the next refusal in full.
    #[test]
    fn a_summary_comes_each_interval_while_refusals_go_on() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            coop::block_on(async {
                let interval = Duration::from_millis(40);
                TALLIES.with_borrow_mut(|tallies| tallies.interval = interval);
                let client = client([127, 0, 0, 1], 5555);
                let in_full = (0..1000)
                    .filter(|_| tally(Reason::ProxyHeader, client, &"no PROXY header"))
                    .count();
                assert_eq!(in_full, IN_FULL as usize);
                let first = summaries_logged(&captured, 1, interval).await;
                assert_eq!(first.len(), 1, "{first:?}");
                assert!(
                    first[0].contains(&format!(
                        "Connections refused for their PROXY header: {} more in the last 1 s, from 1 client (last: 127.0.0.1:5555: no PROXY header)",
                        1000 - IN_FULL
                    )),
                    "{first:?}"
                );
                // Still coming: held back, and summed up once more.
                assert!(!tally(Reason::ProxyHeader, client, &"no PROXY header"));
                let second = summaries_logged(&captured, 2, interval).await;
                assert_eq!(second.len(), 2, "{second:?}");
                assert!(second[1].contains(": 1 more in the last"), "{second:?}");
                // An interval with none ends the summing: the next is in full again.
                let quiet = coop::time::now() + interval * 3;
                while TALLIES.with_borrow(|t| t.each[Reason::ProxyHeader as usize].summing)
                    && coop::time::now() < quiet + Duration::from_secs(20)
                {
                    coop::time::sleep(interval / 4).await;
                }
                assert!(tally(Reason::ProxyHeader, client, &"no PROXY header"));
                assert_eq!(captured.summaries().len(), 2);
                assert_eq!(counts().get(Reason::ProxyHeader), 1002);
                assert_eq!(counts().get(Reason::TlsHandshake), 0);
            });
        });
    }

    #[test]
    fn counts_add_up() {
        let mut a = Counts::default();
        a.0[Reason::ProxyHeader as usize] = 2;
        let mut b = Counts::default();
        b.0[Reason::ProxyHeader as usize] = 3;
        b.0[Reason::PerSource as usize] = 1;
        let sum = a.plus(&b);
        assert_eq!(sum.get(Reason::ProxyHeader), 5);
        assert_eq!(sum.get(Reason::PerSource), 1);
        assert_eq!(sum.get(Reason::TlsHandshake), 0);
    }
}
