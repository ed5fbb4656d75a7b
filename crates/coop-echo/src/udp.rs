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

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use coop::UdpSocket;

pub use limiter::Limiter;

use crate::fault::{self, Datagram};
use crate::plural::count;
use crate::serve::{Settings, canonical};

/// Bytes of delayed replies (`--fault delay=...`) a thread holds at most; a reply past
/// them goes at once, rather than memory growing with the rate times the delay.
const MAX_DELAYED: usize = 16 << 20;

/// Largest UDP payload over IPv4 (65,535 less the IPv4 and UDP headers).
const MAX_PAYLOAD_V4: usize = 65_507;
/// Largest UDP payload over IPv6 (without jumbograms).
const MAX_PAYLOAD_V6: usize = 65_527;

/// Answers datagrams on `socket` forever, with the UDP faults of `faults` if any are in
/// force.
pub async fn serve(
    socket: UdpSocket,
    settings: Rc<Settings>,
    mut limiter: Option<Limiter>,
    faults: Option<Arc<fault::Table>>,
) {
    let socket = Rc::new(socket);
    let delayed = Rc::new(Cell::new(0));
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
        if let Some(faults) = &faults
            && let Some(datagram) = faults.draw_datagram()
        {
            misbehave(&socket, &reply, from, datagram, faults, &settings, &delayed).await;
            continue;
        }
        send(&socket, &reply, from, &settings).await;
    }
}

/// Sends one reply, and counts it.
async fn send(socket: &UdpSocket, reply: &[u8], to: SocketAddr, settings: &Settings) {
    match socket.send_to(reply, to).await {
        Ok(_) => settings
            .totals
            .udp_out
            .set(settings.totals.udp_out.get() + 1),
        Err(e) => tracing::debug!("udp: reply to {}: {e}", canonical(to)),
    }
}

/// Answers (or not) as the datagram's faults say: dropped, sent twice, held.
#[inline(never)]
async fn misbehave(
    socket: &Rc<UdpSocket>,
    reply: &[u8],
    to: SocketAddr,
    datagram: Datagram,
    faults: &fault::Table,
    settings: &Rc<Settings>,
    delayed: &Rc<Cell<usize>>,
) {
    let client = canonical(to);
    if datagram.drop {
        faults.acted_kind("drop", client, "datagram left unanswered");
        return;
    }
    let copies = if datagram.duplicate {
        faults.acted_kind("duplicate", client, "reply sent twice");
        2
    } else {
        1
    };
    match datagram.delay {
        Some(held) if delayed.get() + reply.len() <= MAX_DELAYED => {
            faults.acted_kind("delay", client, &format!("reply held {held:?}"));
            delayed.set(delayed.get() + reply.len());
            let (socket, settings, delayed) =
                (Rc::clone(socket), Rc::clone(settings), Rc::clone(delayed));
            let reply = reply.to_vec();
            drop(coop::spawn(async move {
                coop::time::sleep(held).await;
                for _ in 0..copies {
                    send(&socket, &reply, to, &settings).await;
                }
                delayed.set(delayed.get() - reply.len());
            }));
        }
        _ => {
            for _ in 0..copies {
                send(socket, reply, to, settings).await;
            }
        }
    }
}

fn max_payload(to: SocketAddr) -> usize {
    match to {
        SocketAddr::V4(_) => MAX_PAYLOAD_V4,
        SocketAddr::V6(_) => MAX_PAYLOAD_V6,
    }
}
