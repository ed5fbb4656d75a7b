//! What a request asks of its answer by its query, on any path (the names fortio's users
//! know): a delay, a status (for a share of requests), a reset or a close, and the
//! answer's own shape (its size or body, its content type, headers of its own), so that
//! the endpoint can answer as a misbehaving backend would. `--http-defaults` gives the
//! same for every request whose query names none of them.

use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};

use super::body::{Reply, STREAM_MAX};
use crate::units::{parse_duration, parse_size};

/// The longest delay a request may ask for.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);

/// The query parameters read here; a request naming any of them gets no defaults.
const NAMES: [&str; 8] = [
    "delay",
    "status",
    "size",
    "body",
    "close",
    "reset",
    "header",
    "content-type",
];

/// A request's faults and shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Asked {
    /// Hold the answer this long.
    pub delay: Option<Duration>,
    /// Answer with this status, for this share of requests (1.0: all).
    pub status: Option<(StatusCode, f64)>,
    /// A body of this many bytes instead.
    pub size: Option<u64>,
    /// This body instead.
    pub body: Option<Bytes>,
    /// Close the connection after the answer.
    pub close: bool,
    /// Reset instead of answering.
    pub reset: bool,
    /// Headers added to the answer.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The answer's content type.
    pub content_type: Option<HeaderValue>,
}

impl Asked {
    /// What `query` asks; `Ok(None)` if it names none of these parameters. An error
    /// names the bad parameter, in one line.
    pub fn from_query(query: &str) -> Result<Option<Asked>, String> {
        let mut asked = Asked::default();
        let mut named = false;
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if !NAMES.contains(&name.as_ref()) {
                continue;
            }
            named = true;
            let bad = |why: &str| format!("{name}={value}: {why}");
            match name.as_ref() {
                "delay" => {
                    let delay = parse_duration(&value)
                        .filter(|d| *d <= MAX_DELAY)
                        .ok_or_else(|| bad("give e.g. 250ms or 2s, at most 3600s"))?;
                    asked.delay = Some(delay);
                }
                "status" => {
                    let (code, share) = match value.split_once(':') {
                        Some((code, share)) => (code, Some(share)),
                        None => (value.as_ref(), None),
                    };
                    let code = code
                        .parse::<u16>()
                        .ok()
                        .filter(|c| (200..=599).contains(c))
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .ok_or_else(|| bad("give a status from 200 to 599 (503, or 503:25)"))?;
                    let share = match share {
                        None => 1.0,
                        Some(share) => share
                            .parse::<f64>()
                            .ok()
                            .filter(|s| (0.0..=100.0).contains(s))
                            .map(|s| s / 100.0)
                            .ok_or_else(|| bad("the share after ':' is a percentage, 0 to 100"))?,
                    };
                    asked.status = Some((code, share));
                }
                "size" => {
                    let size = parse_size(&value)
                        .ok()
                        .filter(|&n| n <= STREAM_MAX)
                        .ok_or_else(|| bad("give bytes (or KiB, MiB, GiB), at most 1 TiB"))?;
                    asked.size = Some(size);
                }
                "body" => asked.body = Some(Bytes::from(value.clone().into_owned())),
                "close" | "reset" => {
                    let on = match value.as_ref() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(bad("give true or false")),
                    };
                    if name == "close" {
                        asked.close = on;
                    } else {
                        asked.reset = on;
                    }
                }
                "header" => {
                    let (header, text) = value
                        .split_once(':')
                        .ok_or_else(|| bad("give Name:Value"))?;
                    let header = HeaderName::from_bytes(header.trim().as_bytes())
                        .map_err(|_| bad("not a header name"))?;
                    let text = HeaderValue::from_str(text.trim())
                        .map_err(|_| bad("not a header value"))?;
                    asked.headers.push((header, text));
                }
                _ => {
                    let text =
                        HeaderValue::from_str(&value).map_err(|_| bad("not a header value"))?;
                    asked.content_type = Some(text);
                }
            }
        }
        if asked.size.is_some() && asked.body.is_some() {
            return Err("size and body: give one or the other".to_string());
        }
        Ok(named.then_some(asked))
    }

    /// Whether this request draws the status it asks for.
    pub fn draws_status(&self) -> Option<StatusCode> {
        let (status, share) = self.status?;
        (share >= 1.0 || unit() < share).then_some(status)
    }

    /// Gives `response` the shape asked for: `status` (if drawn), the body, the headers.
    pub(crate) fn shape(&self, response: &mut Response<Reply>, status: Option<StatusCode>) {
        if let Some(status) = status {
            *response.status_mut() = status;
        }
        if let Some(size) = self.size {
            *response.body_mut() = Reply::Stream(size);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
        }
        if let Some(body) = &self.body {
            *response.body_mut() = Reply::full(body.clone());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        if let Some(kind) = &self.content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, kind.clone());
        }
        for (name, value) in &self.headers {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
}

/// A draw in [0, 1), from the thread's own generator (splitmix64).
fn unit() -> f64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x5eed_u64));
    }
    let mut z = STATE.with(|s| {
        let next = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(next);
        next
    });
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_without_these_names_asks_nothing() {
        assert_eq!(Asked::from_query("a=1&b=2"), Ok(None));
        assert_eq!(Asked::from_query(""), Ok(None));
    }

    #[test]
    fn every_parameter_reads() {
        let asked = Asked::from_query(
            "delay=250ms&status=503:25&size=1KiB&close=true&header=X-A:1&header=X-B:%20two&content-type=text/x",
        )
        .unwrap()
        .unwrap();
        assert_eq!(asked.delay, Some(Duration::from_millis(250)));
        assert_eq!(asked.status, Some((StatusCode::SERVICE_UNAVAILABLE, 0.25)));
        assert_eq!(asked.size, Some(1024));
        assert!(asked.close && !asked.reset);
        assert_eq!(asked.headers.len(), 2);
        assert_eq!(asked.headers[1].1, "two");
        assert_eq!(asked.content_type.unwrap(), "text/x");
        let reset = Asked::from_query("reset=true&body=hi").unwrap().unwrap();
        assert!(reset.reset);
        assert_eq!(reset.body.unwrap(), "hi");
    }

    #[test]
    fn a_bad_parameter_is_named() {
        for (query, part) in [
            ("delay=soon", "delay=soon:"),
            ("delay=2h", "delay=2h:"),
            ("status=99", "status=99:"),
            ("status=503:200", "status=503:200:"),
            ("size=-1", "size=-1:"),
            ("close=maybe", "close=maybe:"),
            ("header=novalue", "header=novalue:"),
            ("size=1&body=x", "one or the other"),
        ] {
            let why = Asked::from_query(query).unwrap_err();
            assert!(why.contains(part), "{query}: {why}");
        }
    }

    #[test]
    fn a_status_share_is_drawn() {
        let asked = Asked::from_query("status=503:25").unwrap().unwrap();
        let drawn = (0..4000).filter(|_| asked.draws_status().is_some()).count();
        assert!((850..=1150).contains(&drawn), "{drawn} of 4000");
    }
}
