//! `KIND[=VALUE][@SHARE]`: one fault, as `--fault` and `PUT /faults` take it.

use std::fmt;
use std::time::Duration;

use crate::units::{parse_duration, parse_share, parse_size};

/// What a fault does, and to what.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fault {
    /// Each reply (TCP, TLS, a WebSocket message, a UDP datagram) is held this long
    /// before it is written: the bounds of a uniform draw, the same for a fixed delay.
    Delay(Duration, Duration),
    /// Reply bytes leave at most this many a second (TCP, TLS, WebSocket).
    Throttle(u64),
    /// After this many reply bytes the server closes (FIN), reading nothing more.
    CloseAfter(u64),
    /// After this many reply bytes the server resets the connection (`0`: at accept).
    ResetAfter(u64),
    /// After this many reply bytes the server neither reads nor answers.
    StallAfter(u64),
    /// This share of UDP datagrams gets no reply.
    Drop(f64),
    /// This share of UDP replies is sent twice.
    Duplicate(f64),
}

/// One `--fault`: a fault, and the share of connections it applies to.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// What it does.
    pub fault: Fault,
    /// The share of connections it is drawn for, at accept (`None`: every one).
    pub share: Option<f64>,
    /// As it was given.
    pub text: String,
}

/// The kinds, in the order `/metrics` lists them: `--fault`'s, then the ones only an
/// HTTP request's query asks for (`?status=`, `?close=`, `?reset=`).
pub const KINDS: [&str; 10] = [
    "delay",
    "throttle",
    "close-after",
    "reset-after",
    "stall-after",
    "drop",
    "duplicate",
    "status",
    "close",
    "reset",
];

impl Fault {
    /// Its kind's name, as a SPEC and `/metrics` say it.
    pub fn kind(&self) -> &'static str {
        KINDS[self.index()]
    }

    /// Its kind's place in [`KINDS`].
    pub fn index(&self) -> usize {
        match self {
            Fault::Delay(..) => 0,
            Fault::Throttle(_) => 1,
            Fault::CloseAfter(_) => 2,
            Fault::ResetAfter(_) => 3,
            Fault::StallAfter(_) => 4,
            Fault::Drop(_) => 5,
            Fault::Duplicate(_) => 6,
        }
    }

    /// Whether it acts on UDP (the others act on connections).
    pub fn on_udp(&self) -> bool {
        matches!(
            self,
            Fault::Delay(..) | Fault::Drop(_) | Fault::Duplicate(_)
        )
    }

    /// Whether it acts on connections: TCP, TLS and WebSocket.
    pub fn on_connections(&self) -> bool {
        !matches!(self, Fault::Drop(_) | Fault::Duplicate(_))
    }
}

impl fmt::Display for Spec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Spec {
    type Err = String;

    /// Reads `KIND[=VALUE][@SHARE]`; an error names the bad part, in one line.
    fn from_str(text: &str) -> Result<Spec, String> {
        let text = text.trim();
        let bad = |why: String| format!("'{text}': {why}");
        let (body, share) = match text.split_once('@') {
            Some((body, share)) => {
                let share = parse_share(share)
                    .ok_or_else(|| bad(format!("@{share} is not a share (e.g. @10%)")))?;
                (body, Some(share))
            }
            None => (text, None),
        };
        let (kind, value) = match body.split_once('=') {
            Some((kind, value)) => (kind, Some(value)),
            None => (body, None),
        };
        let value = |example: &str| {
            value.ok_or_else(|| bad(format!("{kind} needs a value (e.g. {kind}={example})")))
        };
        let bytes = |example: &str| -> Result<u64, String> {
            let value = value(example)?;
            parse_size(value).map_err(|_| {
                bad(format!(
                    "{value} is not a size (bytes, or with KiB or MiB: e.g. {kind}={example})"
                ))
            })
        };
        let share_of = |example: &str| -> Result<f64, String> {
            let value = value(example)?;
            parse_share(value)
                .ok_or_else(|| bad(format!("{value} is not a share (e.g. {kind}={example})")))
        };
        let fault = match kind {
            "delay" => {
                let value = value("50ms or delay=20ms..80ms")?;
                let duration = |d: &str| {
                    parse_duration(d).ok_or_else(|| {
                        bad(format!("{d} is not a duration (e.g. 50ms, or 20ms..80ms)"))
                    })
                };
                match value.split_once("..") {
                    Some((low, high)) => {
                        let (low, high) = (duration(low)?, duration(high)?);
                        if low > high {
                            return Err(bad(format!("{value}: the range runs backwards")));
                        }
                        Fault::Delay(low, high)
                    }
                    None => {
                        let d = duration(value)?;
                        Fault::Delay(d, d)
                    }
                }
            }
            "throttle" => {
                let value = value("10KiB/s")?;
                let rate = value
                    .strip_suffix("/s")
                    .and_then(|size| parse_size(size).ok())
                    .filter(|&rate| rate > 0)
                    .ok_or_else(|| {
                        bad(format!(
                            "{value} is not a rate above 0 (e.g. throttle=10KiB/s)"
                        ))
                    })?;
                Fault::Throttle(rate)
            }
            "close-after" => Fault::CloseAfter(bytes("10")?),
            "reset-after" => Fault::ResetAfter(bytes("0")?),
            "stall-after" => Fault::StallAfter(bytes("1KiB")?),
            "drop" | "duplicate" => {
                if share.is_some() {
                    return Err(bad(format!(
                        "{kind} takes its share as its value ({kind}=5%), not after @"
                    )));
                }
                let share = share_of("5%")?;
                if kind == "drop" {
                    Fault::Drop(share)
                } else {
                    Fault::Duplicate(share)
                }
            }
            _ => {
                return Err(bad(format!(
                    "no fault is called '{kind}' (there are {})",
                    KINDS[..7].join(", ")
                )));
            }
        };
        Ok(Spec {
            fault,
            share,
            text: text.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> Result<Spec, String> {
        s.parse()
    }

    #[test]
    fn every_kind_reads() {
        let ms = Duration::from_millis;
        assert_eq!(
            spec("delay=50ms").unwrap().fault,
            Fault::Delay(ms(50), ms(50))
        );
        assert_eq!(
            spec("delay=20ms..80ms").unwrap().fault,
            Fault::Delay(ms(20), ms(80))
        );
        assert_eq!(
            spec("throttle=10KiB/s").unwrap().fault,
            Fault::Throttle(10240)
        );
        assert_eq!(spec("close-after=10").unwrap().fault, Fault::CloseAfter(10));
        assert_eq!(
            spec("reset-after=1MiB").unwrap().fault,
            Fault::ResetAfter(1 << 20)
        );
        assert_eq!(spec("stall-after=0").unwrap().fault, Fault::StallAfter(0));
        assert_eq!(spec("drop=5%").unwrap().fault, Fault::Drop(0.05));
        assert_eq!(spec("duplicate=50%").unwrap().fault, Fault::Duplicate(0.5));
        let shared = spec("reset-after=0@30%").unwrap();
        assert_eq!(shared.share, Some(0.3));
        assert_eq!(shared.to_string(), "reset-after=0@30%");
    }

    #[test]
    fn a_bad_spec_names_its_bad_part() {
        for (bad, part) in [
            ("delay", "delay needs a value"),
            ("delay=soon", "soon is not a duration"),
            ("delay=80ms..20ms", "runs backwards"),
            ("throttle=10KiB", "10KiB is not a rate"),
            ("throttle=0/s", "0/s is not a rate above 0"),
            ("close-after=ten", "ten is not a size"),
            ("reset-after=0@30", "@30 is not a share"),
            ("reset-after=0@130%", "@130% is not a share"),
            ("drop=5", "5 is not a share"),
            ("drop=5%@10%", "not after @"),
            ("explode=1", "no fault is called 'explode'"),
        ] {
            let why = spec(bad).unwrap_err();
            assert!(why.contains(part), "{bad}: {why}");
            assert!(why.starts_with(&format!("'{bad}'")), "{bad}: {why}");
            assert!(!why.contains('\n'), "{why}");
        }
    }
}
