//! Faults on demand (`serve --fault SPEC`, `PUT /faults`): the server misbehaves on
//! purpose, so that what clients, proxies and retries do about it can be tested.
//!
//! A connection's faults are drawn once, at accept, from the faults in force then
//! ([`Table::draw`]); a connection with none runs the echo it would have run without
//! them, and one with some runs `tcp`'s, which holds, paces and cuts its replies. Draws
//! are a hash of the seed, the connection's number and the fault's place: the same seed
//! and the same order of connections give the same faults.

pub mod spec;
pub(crate) mod tcp;

use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use spec::{Fault, KINDS, Spec};

/// The faults in force, shared by every serving thread and the admin address, and how
/// often each kind has acted.
#[derive(Debug)]
pub struct Table {
    specs: RwLock<Arc<[Spec]>>,
    /// Whether any is in force: the one thing a connection accepted without faults reads.
    active: AtomicBool,
    seed: u64,
    /// Connections drawn for so far: each one's number in the draws.
    drawn: AtomicU64,
    /// Datagrams drawn for so far.
    datagrams: AtomicU64,
    applied: [AtomicU64; KINDS.len()],
}

impl Table {
    /// A table with `specs` in force, drawing from `seed` (`None`: a seed of its own).
    pub fn new(specs: Vec<Spec>, seed: Option<u64>) -> Table {
        let table = Table {
            specs: RwLock::new(Arc::from([])),
            active: AtomicBool::new(false),
            seed: seed.unwrap_or_else(|| RandomState::new().hash_one(0x5eed)),
            drawn: AtomicU64::new(0),
            datagrams: AtomicU64::new(0),
            applied: Default::default(),
        };
        table.replace(specs);
        table
    }

    /// Puts `specs` in force for connections accepted from now on.
    pub fn replace(&self, specs: Vec<Spec>) {
        let active = !specs.is_empty();
        // A poisoned lock only means a panic elsewhere mid-replace of an `Arc`: the
        // value in it is whole either way.
        *self.specs.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(specs);
        self.active.store(active, Ordering::Release);
    }

    /// The faults in force.
    pub fn specs(&self) -> Arc<[Spec]> {
        Arc::clone(&self.specs.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// How often each kind has acted, in [`KINDS`]' order.
    pub fn applied(&self) -> [u64; KINDS.len()] {
        std::array::from_fn(|i| self.applied[i].load(Ordering::Relaxed))
    }

    /// Counts `fault` as having acted, and says so at debug level.
    pub(crate) fn acted(&self, fault: &Fault, client: SocketAddr, what: &str) {
        self.acted_kind(fault.kind(), client, what);
    }

    /// Counts a fault of `kind` (one of [`KINDS`]) as having acted, and says so at debug
    /// level.
    pub(crate) fn acted_kind(&self, kind: &'static str, client: SocketAddr, what: &str) {
        if let Some(index) = KINDS.iter().position(|k| *k == kind) {
            self.applied[index].fetch_add(1, Ordering::Relaxed);
        }
        tracing::debug!("Fault {kind} for {client}: {what}");
    }

    /// The faults of a connection accepted now: `None` if it has none (most often
    /// because none is in force: one load).
    #[inline]
    pub fn draw(&self) -> Option<Plan> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        self.draw_from_specs()
    }

    #[inline(never)]
    fn draw_from_specs(&self) -> Option<Plan> {
        let number = self.drawn.fetch_add(1, Ordering::Relaxed);
        let mut plan = Plan {
            random: mix(self.seed, number, u64::MAX),
            ..Plan::default()
        };
        for (place, spec) in self.specs().iter().enumerate() {
            if !spec.fault.on_connections() {
                continue;
            }
            if let Some(share) = spec.share
                && unit(mix(self.seed, number, place as u64)) >= share
            {
                continue;
            }
            plan.add(spec.fault);
        }
        plan.any().then_some(plan)
    }

    /// The UDP faults for the next datagram: each drawn afresh (`None` if none acts).
    pub(crate) fn draw_datagram(&self) -> Option<Datagram> {
        if !self.active.load(Ordering::Acquire) {
            return None;
        }
        let number = self.datagrams.fetch_add(1, Ordering::Relaxed);
        let mut datagram = Datagram::default();
        for (place, spec) in self.specs().iter().enumerate() {
            let draw = unit(mix(self.seed ^ 0xda7a, number, place as u64));
            let chosen = spec.share.is_none_or(|share| draw < share);
            match spec.fault {
                Fault::Drop(share) if draw < share => datagram.drop = true,
                Fault::Duplicate(share) if draw < share => datagram.duplicate = true,
                Fault::Delay(low, high) if chosen => {
                    let at = unit(mix(self.seed ^ 0xde1a, number, place as u64));
                    datagram.delay = Some(between(low, high, at));
                }
                _ => {}
            }
        }
        datagram.any().then_some(datagram)
    }
}

/// One connection's faults, drawn at accept.
#[derive(Debug, Default, Clone)]
pub struct Plan {
    /// Each reply held for a draw between these bounds.
    pub delay: Option<(Duration, Duration)>,
    /// Reply bytes a second.
    pub throttle: Option<u64>,
    /// The first cut: after so many reply bytes, this fault ends the connection.
    pub cut: Option<(u64, Fault)>,
    /// The state of the connection's own draws (a delay per reply).
    random: u64,
}

impl Plan {
    fn add(&mut self, fault: Fault) {
        match fault {
            Fault::Delay(low, high) => self.delay = Some((low, high)),
            Fault::Throttle(rate) => self.throttle = Some(rate),
            Fault::CloseAfter(at) | Fault::ResetAfter(at) | Fault::StallAfter(at) => {
                if self.cut.is_none_or(|(first, _)| at < first) {
                    self.cut = Some((at, fault));
                }
            }
            Fault::Drop(_) | Fault::Duplicate(_) => {}
        }
    }

    fn any(&self) -> bool {
        self.delay.is_some() || self.throttle.is_some() || self.cut.is_some()
    }

    /// How long the next reply is held.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let (low, high) = self.delay?;
        self.random = mix(self.random, 0, 0);
        Some(between(low, high, unit(self.random)))
    }

    /// The plan's faults, as SPECs say them, for a log line.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((low, high)) = self.delay {
            parts.push(if low == high {
                format!("delay={low:?}")
            } else {
                format!("delay={low:?}..{high:?}")
            });
        }
        if let Some(rate) = self.throttle {
            parts.push(format!("throttle={rate}/s"));
        }
        if let Some((at, fault)) = self.cut {
            parts.push(format!("{}={at}", fault.kind()));
        }
        parts.join(", ")
    }
}

/// A datagram's faults.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Datagram {
    /// No reply.
    pub drop: bool,
    /// The reply sent twice.
    pub duplicate: bool,
    /// The reply held this long.
    pub delay: Option<Duration>,
}

impl Datagram {
    fn any(&self) -> bool {
        self.drop || self.duplicate || self.delay.is_some()
    }
}

/// splitmix64 of the three: well mixed, and the same on every machine.
fn mix(seed: u64, number: u64, place: u64) -> u64 {
    let mut z = seed
        ^ number.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ place.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A draw in [0, 1).
fn unit(random: u64) -> f64 {
    (random >> 11) as f64 / (1u64 << 53) as f64
}

/// The point `at` (in [0, 1)) of the way from `low` to `high`.
fn between(low: Duration, high: Duration, at: f64) -> Duration {
    low + (high - low).mul_f64(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(specs: &[&str], seed: u64) -> Table {
        Table::new(
            specs.iter().map(|s| s.parse().unwrap()).collect(),
            Some(seed),
        )
    }

    #[test]
    fn no_fault_in_force_draws_nothing() {
        assert!(table(&[], 1).draw().is_none());
        let t = table(&["drop=50%"], 1);
        assert!(t.draw().is_none(), "a UDP fault is no connection's");
    }

    #[test]
    fn the_same_seed_draws_the_same_connections() {
        let picks = |seed| {
            let t = table(&["reset-after=0@30%"], seed);
            (0..400).map(|_| t.draw().is_some()).collect::<Vec<_>>()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
        let share = picks(7).iter().filter(|&&p| p).count();
        assert!((90..=150).contains(&share), "{share} of 400");
    }

    #[test]
    fn the_first_cut_wins_and_delays_stay_in_their_range() {
        let t = table(
            &["close-after=100", "reset-after=10", "delay=20ms..80ms"],
            3,
        );
        let mut plan = t.draw().unwrap();
        assert_eq!(plan.cut, Some((10, Fault::ResetAfter(10))));
        for _ in 0..1000 {
            let d = plan.next_delay().unwrap();
            assert!(d >= Duration::from_millis(20) && d <= Duration::from_millis(80));
        }
    }

    #[test]
    fn a_replaced_table_draws_from_its_new_faults() {
        let t = table(&["delay=1s"], 3);
        assert!(t.draw().is_some());
        t.replace(Vec::new());
        assert!(t.draw().is_none());
        assert!(t.specs().is_empty());
    }
}
