//! The per-source rate limit of UDP replies: a token bucket per source address, kept in a
//! bounded table whose look-up and eviction are O(1), and which no flood of forged sources
//! can turn against the clients it serves.
//!
//! # What the table must do
//!
//! An attacker who forges source addresses can fill any bounded table with sources of
//! its choosing, as often as it likes. So the question is not whether a genuine client's
//! state can be pushed out (it can), but what that costs the client. Here it costs
//! nothing:
//!
//! - **A source the table does not hold gets a fresh bucket: a full second's worth of
//!   replies.** That is exactly the state of a source that has been quiet for a second or
//!   more, which is what a forgotten source almost always is; a client's replies never
//!   depend on its state having been kept. A new client, or one that was forgotten while
//!   it paused, is answered at its rate, however the table is being flooded. (The table
//!   this replaces refused every new source while it was full of sources heard in the last
//!   second: a flood of 16,384 forged sources a second locked out every new or returning
//!   client, and each refusal cost a scan of the whole table.)
//! - **What the table keeps is what makes the limit exact**, so it keeps the sources that
//!   come back: a segmented LRU (SLRU). A new source enters *probation* (at most
//!   [`PROBATION`] sources, least recently seen out first); a datagram from a source in
//!   probation promotes it to the *protected* segment (at most [`PROTECTED`] sources),
//!   whose least recently seen source, when it overflows, goes back to probation (a
//!   second chance) rather than out. A flood of sources that each send once, or that
//!   rotate over more than [`PROBATION`] addresses, only ever churns probation: each of
//!   its sources is pushed out before it comes back, and never reaches the protected
//!   segment. A client that sends twice within [`PROBATION`] new sources of each other
//!   (any client sending faster than its limit allows, at once) stays protected, with its
//!   bucket, whatever such a flood does.
//!
//! # What forgetting allows
//!
//! A source forgotten with tokens spent comes back with a full bucket, so the limit is
//! exact only for the sources the table keeps. Take the sources in the table in order,
//! the protected segment newest first, then probation newest first: a datagram from any
//! other source moves a given source at most one place towards the end, where it is
//! forgotten (a promotion puts one source from behind it in front of it; an admission
//! puts one in front of it, or behind it if it is protected, and forgets the last; a
//! demotion keeps the order). A source sending is put first. So to reset the bucket of
//! one address (say, the victim whose address a reflection attack forges), an attacker
//! must send at least [`MAX_SOURCES`] − 1 datagrams from other addresses while the
//! victim's is silent, and gets one second's burst for it: a single address gets at most
//! its rate, plus `rate` replies per 16,383 datagrams of such churn (0.6% of them, at the
//! default 100). Sources that only ever send once cannot move a protected source at all.
//! The server never sends more datagrams than it receives, and each reply is the datagram
//! and the prefix (`GOT:`, 4 bytes).
//!
//! There is deliberately no global cap on replies to unknown sources: a forged flood is
//! exactly what would drain it, and genuine new clients, which look no different from
//! forged ones on their first datagram, would be refused with the flood, which is the
//! lock-out this design removes.
//!
//! # Cost and memory
//!
//! A datagram costs one hash look-up and a few index writes: O(1), whatever the number of
//! sources. The table holds at most [`MAX_SOURCES`] (16,384) sources: each a slot of
//! [`SLOT_BYTES`] bytes and an entry in the index (a `HashMap` from address to slot, at
//! most 65,536 buckets of 25 bytes after heavy churn); at most about 2.6 MB per serving
//! thread, reached only once that many distinct sources have been heard.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Sources remembered at most: [`PROBATION`] + [`PROTECTED`].
pub const MAX_SOURCES: usize = PROBATION + PROTECTED;
/// Sources heard once (since they last entered the table) remembered at most.
pub const PROBATION: usize = 4_096;
/// Sources heard again while remembered, kept at most.
pub const PROTECTED: usize = 12_288;
/// The size of one source's slot.
pub const SLOT_BYTES: usize = size_of::<Slot>();

/// No slot: the end of a list.
const NIL: u32 = u32::MAX;

/// Replies at most `rate` datagrams a second to each source address, in bursts of up to
/// a second's worth. See the module's documentation for the table of sources.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    /// Where each source's slot is.
    index: HashMap<IpAddr, u32>,
    /// Every remembered source, in the order first admitted; a slot is reused in place
    /// when its source is forgotten, so there are never more than the segments hold.
    slots: Vec<Slot>,
    /// Probation, then protected.
    segments: [Segment; 2],
}

/// Which segment a slot is in: the index into `Limiter::segments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tier {
    Probation = 0,
    Protected = 1,
}

/// A list of slots, newest first, and its bound.
#[derive(Debug, Clone, Copy)]
struct Segment {
    newest: u32,
    oldest: u32,
    len: usize,
    max: usize,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    source: IpAddr,
    tier: Tier,
    /// The neighbours in its segment's list (`NIL` at either end).
    newer: u32,
    older: u32,
    bucket: Bucket,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// A limiter of `rate` datagrams a second per source (at least 1).
    pub fn new(rate: u32) -> Limiter {
        Limiter::with_segments(rate, PROBATION, PROTECTED)
    }

    /// With segments of other sizes (at least 1 each), for tests.
    fn with_segments(rate: u32, probation: usize, protected: usize) -> Limiter {
        let segment = |max: usize| Segment {
            newest: NIL,
            oldest: NIL,
            len: 0,
            max: max.max(1),
        };
        Limiter {
            rate: f64::from(rate.max(1)),
            index: HashMap::new(),
            slots: Vec::new(),
            segments: [segment(probation), segment(protected)],
        }
    }

    /// Whether `source` may have a reply `now`; takes a token if so. A source not in the
    /// table is admitted to it with a full bucket, so its first datagram is always
    /// answered.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let i = match self.index.get(&source) {
            Some(&i) => {
                self.seen_again(i);
                i
            }
            None => self.admit(source, now),
        };
        let rate = self.rate;
        let bucket = &mut self.slots[i as usize].bucket;
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.last = bucket.last.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A remembered source sent again: to the front of the protected segment (promoted,
    /// if it was on probation; the protected segment's oldest goes back to probation if
    /// that overflows it).
    fn seen_again(&mut self, i: u32) {
        let tier = self.slots[i as usize].tier;
        if tier == Tier::Protected && self.segments[Tier::Protected as usize].newest == i {
            return;
        }
        self.unlink(i);
        self.push_newest(Tier::Protected, i);
        let protected = self.segments[Tier::Protected as usize];
        if protected.len > protected.max {
            let oldest = protected.oldest;
            self.unlink(oldest);
            self.push_newest(Tier::Probation, oldest);
        }
    }

    /// A source not in the table: on probation with a full bucket, in the slot of the
    /// source longest on probation if that is full.
    fn admit(&mut self, source: IpAddr, now: Instant) -> u32 {
        let slot = Slot {
            source,
            tier: Tier::Probation,
            newer: NIL,
            older: NIL,
            bucket: Bucket {
                tokens: self.rate,
                last: now,
            },
        };
        let probation = self.segments[Tier::Probation as usize];
        let i = if probation.len >= probation.max {
            let oldest = probation.oldest;
            self.unlink(oldest);
            let forgotten = std::mem::replace(&mut self.slots[oldest as usize], slot);
            self.index.remove(&forgotten.source);
            oldest
        } else {
            // Below both bounds, so below MAX_SOURCES (far below u32::MAX).
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        };
        self.push_newest(Tier::Probation, i);
        self.index.insert(source, i);
        i
    }

    /// Takes slot `i` out of its segment's list.
    fn unlink(&mut self, i: u32) {
        let Slot {
            tier, newer, older, ..
        } = self.slots[i as usize];
        let segment = &mut self.segments[tier as usize];
        match newer {
            NIL => segment.newest = older,
            newer => self.slots[newer as usize].older = older,
        }
        match older {
            NIL => segment.oldest = newer,
            older => self.slots[older as usize].newer = newer,
        }
        segment.len -= 1;
    }

    /// Puts slot `i` (in no list) at the front of `tier`'s.
    fn push_newest(&mut self, tier: Tier, i: u32) {
        let segment = &mut self.segments[tier as usize];
        let old_newest = segment.newest;
        segment.newest = i;
        if old_newest == NIL {
            segment.oldest = i;
        }
        segment.len += 1;
        if old_newest != NIL {
            self.slots[old_newest as usize].newer = i;
        }
        let slot = &mut self.slots[i as usize];
        slot.tier = tier;
        slot.newer = NIL;
        slot.older = old_newest;
    }

    /// The segment `source` is in, if the table holds it.
    #[cfg(test)]
    fn tier(&self, source: IpAddr) -> Option<Tier> {
        self.index
            .get(&source)
            .map(|&i| self.slots[i as usize].tier)
    }

    /// Checks that the lists, the index and the bounds agree.
    #[cfg(test)]
    fn check(&self) {
        assert_eq!(self.index.len(), self.slots.len());
        let total: usize = self.segments.iter().map(|s| s.len).sum();
        assert_eq!(total, self.slots.len());
        for (t, tier) in [Tier::Probation, Tier::Protected].into_iter().enumerate() {
            let segment = self.segments[t];
            assert!(segment.len <= segment.max, "{tier:?} over its bound");
            let (mut i, mut newer, mut walked) = (segment.newest, NIL, 0);
            while i != NIL {
                let slot = &self.slots[i as usize];
                assert_eq!(slot.tier, tier);
                assert_eq!(slot.newer, newer);
                assert_eq!(self.index.get(&slot.source), Some(&i));
                (newer, i, walked) = (i, slot.older, walked + 1);
            }
            assert_eq!(segment.oldest, newer);
            assert_eq!(walked, segment.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn a_source_gets_a_burst_then_the_rate() {
        let mut limiter = Limiter::new(10);
        let start = Instant::now();
        let source = ip(0x7f00_0001);
        let burst = (0..100).filter(|_| limiter.allow(source, start)).count();
        assert_eq!(burst, 10);
        let later = start + Duration::from_millis(500);
        let refilled = (0..100).filter(|_| limiter.allow(source, later)).count();
        assert_eq!(refilled, 5);
        assert!(
            limiter.allow(ip(0x7f00_0002), later),
            "each source has its own bucket"
        );
    }

    #[test]
    fn the_table_of_sources_is_bounded_and_every_new_source_is_answered() {
        let mut limiter = Limiter::new(10);
        let now = Instant::now();
        for n in 0..(3 * MAX_SOURCES as u32) {
            assert!(limiter.allow(ip(n), now), "a new source has a full bucket");
            // Every other source twice, so that both segments fill.
            if n % 2 == 0 {
                limiter.allow(ip(n), now);
            }
        }
        limiter.check();
        assert_eq!(limiter.slots.len(), MAX_SOURCES);
        assert_eq!(limiter.segments[Tier::Protected as usize].len, PROTECTED);
        assert!(limiter.slots.capacity() <= 2 * MAX_SOURCES);
        assert!(limiter.index.capacity() <= 4 * MAX_SOURCES);
    }

    /// The attack of issue 27: forged datagrams rotating over 16,500 sources at 40,000 a
    /// second, in simulated time. A client answered before, then quiet for 3 s, and new
    /// clients, get every reply their rate allows: the old table, full of sources heard in
    /// the last second, answered none of them.
    #[test]
    fn forged_sources_lock_out_neither_returning_nor_new_clients() {
        const FORGED: u32 = 16_500;
        const PER_SECOND: u32 = 40_000;
        let mut limiter = Limiter::new(100);
        let start = Instant::now();
        let at = |datagrams: u32| start + Duration::from_secs(1) * datagrams / PER_SECOND;
        let returning = ip(0x0a00_0001);
        assert!((0..5).all(|_| limiter.allow(returning, start)));

        let mut sent = 0;
        let mut flood = |limiter: &mut Limiter, datagrams: u32| {
            for _ in 0..datagrams {
                limiter.allow(ip(0x7f01_0000 + sent % FORGED), at(sent));
                sent += 1;
            }
            at(sent)
        };
        // 3 s of flood, the returning client quiet.
        let now = flood(&mut limiter, 3 * PER_SECOND);
        assert_eq!(limiter.tier(returning), Some(Tier::Protected));
        let answered = (0..14).filter(|_| limiter.allow(returning, now)).count();
        assert_eq!(answered, 14, "the returning client");

        for n in 0..3 {
            let new = ip(0x0a00_0100 + n);
            let now = flood(&mut limiter, PER_SECOND / 10);
            let answered = (0..14).filter(|_| limiter.allow(new, now)).count();
            assert_eq!(answered, 14, "new client {n}");
        }
        // And the limit holds for them: a second's worth at most.
        let now = flood(&mut limiter, PER_SECOND / 10);
        let answered = (0..200).filter(|_| limiter.allow(returning, now)).count();
        assert!(answered <= 100, "{answered}");
        limiter.check();
    }

    /// A source that came back keeps its bucket through any flood of sources that each
    /// send once: the flood cannot reset its limit.
    #[test]
    fn a_flood_of_one_shot_sources_does_not_reset_a_returning_source() {
        let mut limiter = Limiter::new(100);
        let now = Instant::now();
        let source = ip(0x0a00_0001);
        assert_eq!((0..300).filter(|_| limiter.allow(source, now)).count(), 100);
        for n in 0..(4 * MAX_SOURCES as u32) {
            assert!(limiter.allow(ip(0x7f00_0000 + n), now));
        }
        assert!(!limiter.allow(source, now), "its spent bucket was kept");
    }

    /// The segments, on tables of 2 + 3: a source seen again is promoted; the protected
    /// segment's oldest goes back to probation, and leaves the table only from there, after
    /// the sources admitted since.
    #[test]
    fn segmented_lru() {
        let mut limiter = Limiter::with_segments(1_000, 2, 3);
        let now = Instant::now();
        let mut send = |n: u32| limiter.allow(ip(n), now);
        for n in [1, 2, 3] {
            send(n);
        }
        // 1 was pushed out of probation by 3.
        assert_eq!(limiter.tier(ip(1)), None);
        assert_eq!(limiter.tier(ip(2)), Some(Tier::Probation));
        for n in [2, 3, 4, 4, 5, 5] {
            limiter.allow(ip(n), now);
        }
        // Protected: 5, 4, 3; 2 went back to probation, newest there.
        assert_eq!(limiter.tier(ip(2)), Some(Tier::Probation));
        assert_eq!(limiter.tier(ip(3)), Some(Tier::Protected));
        for n in [10, 11] {
            limiter.allow(ip(n), now);
        }
        assert_eq!(limiter.tier(ip(2)), None, "out after two newer sources");
        assert_eq!(limiter.tier(ip(3)), Some(Tier::Protected));
        limiter.check();
    }

    proptest! {
        /// Any sequence of sources keeps the lists, the index and the bounds consistent,
        /// and a source the table does not hold is always answered.
        #[test]
        fn the_table_stays_consistent(sources in prop::collection::vec(0u32..24, 0..300)) {
            let mut limiter = Limiter::with_segments(3, 3, 5);
            let now = Instant::now();
            for n in sources {
                let known = limiter.tier(ip(n)).is_some();
                let allowed = limiter.allow(ip(n), now);
                prop_assert!(known || allowed);
                limiter.check();
            }
        }
    }
}
