//! UDP echo (RFC 862): each datagram gets back the prefix and the datagram, in one reply
//! datagram, cut to the largest UDP payload, never split.
//!
//! An echo over UDP answers whoever the source address claims to be, so a forged source
//! turns it into a reflector (CERT CA-1996-01). Replies per source address are therefore
//! limited, by default, with a token bucket per address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use coop::UdpSocket;

use crate::plural::count;
use crate::serve::{Settings, canonical};

/// Largest UDP payload over IPv4 (65,535 less the IPv4 and UDP headers).
const MAX_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 (without jumbograms).
const MAX_PAYLOAD_V6: usize = 65_527;
/// Sources remembered at most; past it, those quiet for a second are forgotten.
const MAX_SOURCES: usize = 16_384;

/// Replies at most `rate` datagrams a second to each source address, in bursts of up to
/// a second's worth.
#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    buckets: HashMap<IpAddr, Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Limiter {
    /// A limiter of `rate` datagrams a second per source (at least 1).
    pub fn new(rate: u32) -> Limiter {
        Limiter {
            rate: f64::from(rate.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Whether `source` may have a reply `now`; takes a token if so.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        if self.buckets.len() >= MAX_SOURCES && !self.buckets.contains_key(&source) {
            self.buckets
                .retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(1));
            if self.buckets.len() >= MAX_SOURCES {
                return false; // a flood of distinct sources: none gets a new bucket
            }
        }
        let rate = self.rate;
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: rate,
            last: now,
        });
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * rate;
        bucket.tokens = (bucket.tokens + refill).min(rate);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Answers datagrams on `socket` forever.
pub async fn serve(socket: UdpSocket, settings: Rc<Settings>, mut limiter: Option<Limiter>) {
    let mut datagram = vec![0; 65_536];
    let mut reply = Vec::with_capacity(MAX_PAYLOAD_V6);
    let totals = &settings.totals;
    loop {
        let (n, from) = match socket.recv_from(&mut datagram).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors from earlier replies surface here; they concern no one now.
                tracing::debug!("udp: {e}");
                continue;
            }
        };
        totals.udp_in.set(totals.udp_in.get() + 1);
        if let Some(limiter) = &mut limiter {
            if !limiter.allow(from.ip(), coop::time::now()) {
                let refused = totals.udp_refused.get() + 1;
                totals.udp_refused.set(refused);
                if refused.is_power_of_two() {
                    tracing::warn!(
                        "udp: over the rate limit, {} unanswered so far (last from {})",
                        count(refused, "datagram"),
                        canonical(from)
                    );
                }
                continue;
            }
        }
        reply.clear();
        reply.extend_from_slice(&settings.prefix);
        reply.extend_from_slice(&datagram[..n]);
        reply.truncate(max_payload(from));
        match socket.send_to(&reply, from).await {
            Ok(_) => totals.udp_out.set(totals.udp_out.get() + 1),
            Err(e) => tracing::debug!("udp: reply to {}: {e}", canonical(from)),
        }
    }
}

fn max_payload(to: SocketAddr) -> usize {
    match to {
        SocketAddr::V4(_) => MAX_PAYLOAD_V4,
        SocketAddr::V6(_) => MAX_PAYLOAD_V6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_a_burst_then_the_rate() {
        let mut limiter = Limiter::new(10);
        let start = Instant::now();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let burst = (0..100).filter(|_| limiter.allow(ip, start)).count();
        assert_eq!(burst, 10);
        let later = start + Duration::from_millis(500);
        let refilled = (0..100).filter(|_| limiter.allow(ip, later)).count();
        assert_eq!(refilled, 5);
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(
            limiter.allow(other, later),
            "each source has its own bucket"
        );
    }

    #[test]
    fn the_table_of_sources_is_bounded() {
        let mut limiter = Limiter::new(10);
        let now = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 10) {
            limiter.allow(IpAddr::from(i.to_be_bytes()), now);
        }
        assert!(limiter.buckets.len() <= MAX_SOURCES);
        let later = now + Duration::from_secs(2);
        assert!(
            limiter.allow("10.0.0.1".parse().unwrap(), later),
            "quiet sources forgotten"
        );
    }
}
