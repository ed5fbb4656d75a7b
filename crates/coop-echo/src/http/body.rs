//! The bodies of the answers, each streamed as it is produced: hyper asks for the next
//! piece only once the last one is on its way, which is the backpressure.

use std::future::Future as _;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use coop::time::Sleep;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use super::Shared;
use super::routes::Connection;
use crate::units::{parse_duration, parse_size};

/// Bytes of `/stream` per piece.
const STREAM_PIECE: usize = 16 * 1024;

/// What `/stream` sends: a line of the alphabet, over and over.
static PATTERN: [u8; STREAM_PIECE] = {
    let line = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789\n";
    let mut pattern = [0; STREAM_PIECE];
    let mut i = 0;
    while i < STREAM_PIECE {
        pattern[i] = line[i % line.len()];
        i += 1;
    }
    pattern
};

/// `/stream` sends at most this many bytes.
pub const STREAM_MAX: u64 = 1 << 40;

/// `/sse` sends at most this many events.
pub const SSE_MAX_COUNT: u64 = 100_000;

/// `/sse` waits at most this long between events.
pub const SSE_MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// A response's body.
pub(crate) enum Reply {
    /// `/echo`: the request's body, piece by piece, counted both ways.
    Echo {
        body: Incoming,
        shared: Rc<Shared>,
        connection: Rc<Connection>,
    },
    /// All of it at once (`None` once sent).
    Full(Option<Bytes>),
    /// `/sse`: events on a schedule.
    Sse(Sse),
    /// `/stream`: this many more bytes.
    Stream(u64),
}

impl Reply {
    pub(crate) fn full(bytes: Bytes) -> Reply {
        Reply::Full(Some(bytes))
    }

    /// `/stream?size=N`: N bytes (default 1 MiB).
    pub(crate) fn stream_from_query(query: Option<&str>) -> Result<Reply, String> {
        let mut size = 1 << 20;
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            if name == "size" {
                size = parse_size(&value)
                    .ok()
                    .filter(|&n| n <= STREAM_MAX)
                    .ok_or_else(|| {
                        format!("size={value}: give bytes (or KiB, MiB, GiB), at most 1 TiB")
                    })?;
            }
        }
        Ok(Reply::Stream(size))
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Reply::Echo {
                body,
                shared,
                connection,
            } => {
                let frame = Pin::new(body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &frame {
                    if let Some(data) = frame.data_ref() {
                        connection.took(shared, data.len());
                        connection.gave(shared, data.len());
                    }
                }
                frame
            }
            Reply::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Reply::Sse(sse) => sse
                .poll_event(cx)
                .map(|event| event.map(|e| Ok(Frame::data(e)))),
            Reply::Stream(left) => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(STREAM_PIECE as u64) as usize;
                *left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&PATTERN[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Echo { body, .. } => body.is_end_stream(),
            Reply::Full(bytes) => bytes.is_none(),
            Reply::Sse(sse) => sse.sent == sse.count,
            Reply::Stream(left) => *left == 0,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Echo { body, .. } => body.size_hint(),
            Reply::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Reply::Sse(_) => SizeHint::default(),
            Reply::Stream(left) => SizeHint::with_exact(*left),
        }
    }
}

/// `/sse?count=N&interval=T`: N events, the first at once, then one each T.
pub(crate) struct Sse {
    count: u64,
    interval: Duration,
    sent: u64,
    next: Option<Sleep>,
}

impl Sse {
    /// From the query: `count` (default 10) and `interval` (`200ms`, `1s`, `1.5s`, or
    /// seconds; default 1 s).
    pub(crate) fn from_query(query: Option<&str>) -> Result<Sse, String> {
        let mut sse = Sse {
            count: 10,
            interval: Duration::from_secs(1),
            sent: 0,
            next: None,
        };
        for (name, value) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match &*name {
                "count" => {
                    sse.count = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=SSE_MAX_COUNT).contains(n))
                        .ok_or_else(|| format!("count={value}: give 1 to {SSE_MAX_COUNT}"))?;
                }
                "interval" => {
                    sse.interval = parse_duration(&value)
                        .filter(|d| *d <= SSE_MAX_INTERVAL)
                        .ok_or_else(|| {
                            format!("interval={value}: give e.g. 200ms or 1s, at most 3600s")
                        })?;
                }
                _ => {}
            }
        }
        Ok(sse)
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.sent == self.count {
            return Poll::Ready(None);
        }
        if let Some(next) = &mut self.next {
            if Pin::new(next).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.sent += 1;
        self.next = Some(coop::time::sleep(self.interval));
        let event = format!(
            "id: {n}\nevent: tick\ndata: {{\"n\":{n},\"of\":{count}}}\n\n",
            n = self.sent,
            count = self.count
        );
        Poll::Ready(Some(Bytes::from(event)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_parameters_are_named() {
        assert!(Sse::from_query(Some("count=0")).is_err());
        assert!(Sse::from_query(Some("interval=1h")).is_err());
        assert!(Sse::from_query(Some("count=3&interval=200ms")).is_ok());
        assert!(Reply::stream_from_query(Some("size=2TiB")).is_err());
        assert!(Reply::stream_from_query(Some("size=1MiB")).is_ok());
    }
}
