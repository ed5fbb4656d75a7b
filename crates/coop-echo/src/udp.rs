//! UDP echo (RFC 862): each datagram gets back the prefix and the datagram, in one reply
//! datagram, cut to the largest UDP payload, never split.
//!
//! An echo over UDP answers whoever the source address claims to be, so a forged source
//! turns it into a reflector (CERT CA-1996-01). Replies per source address are therefore
//! limited, by default, with a token bucket per address ([`Limiter`]), keyed by the
//! address alone (not the port). The table of buckets is bounded, O(1) per datagram, and
//! fair by design: a source it does not hold gets a full bucket, so a flood of forged
//! sources can push a client's state out but never costs it a reply, and the sources
//! that come back are the ones kept (see [`limiter`]).

pub mod limiter;

use std::net::SocketAddr;
use std::rc::Rc;

use coop::UdpSocket;

pub use limiter::Limiter;

use crate::plural::count;
use crate::serve::{Settings, canonical};

/// Largest UDP payload over IPv4 (65,535 less the IPv4 and UDP headers).
const MAX_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 (without jumbograms).
const MAX_PAYLOAD_V6: usize = 65_527;

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
