//! The reply to what a client sends: the prefix, then the bytes, as pure functions.
//!
//! An [`Encoder`] describes the reply as slices of the prefix and of the input, handed
//! to one `writev` (chunk framing), or copies it into a buffer shared by all connections
//! (line framing, where a chunk may hold thousands of short lines); after a write it says
//! how much of the input is answered, keeping its place even in the middle of a prefix.
//! So a connection holds nothing but the input it has not answered yet, and nothing at
//! all once it has.

use std::io::IoSlice;
use std::rc::Rc;

/// Where the prefix goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Framing {
    /// Before every chunk that one read returns, as the Python tutorial's server does: the
    /// reply depends on how TCP split the stream.
    Chunk,
    /// Before every line: the reply depends only on the bytes. A line is answered as its
    /// bytes arrive, never held back waiting for its end.
    Line,
}

/// One connection's place in its reply.
#[derive(Clone, Debug)]
pub struct Encoder {
    prefix: Rc<[u8]>,
    framing: Framing,
    /// The next input byte starts a chunk or a line, so the prefix goes first.
    at_start: bool,
    /// How much of that prefix is already written.
    prefix_sent: usize,
}

/// Slices the reply to one chunk takes in chunk framing: the prefix and the chunk.
pub const CHUNK_SLICES: usize = 2;

impl Encoder {
    /// A connection's encoder, at the start of its first chunk or line.
    pub fn new(prefix: Rc<[u8]>, framing: Framing) -> Self {
        Encoder {
            prefix,
            framing,
            at_start: true,
            prefix_sent: 0,
        }
    }

    /// The prefix, as shared by every connection of a server.
    pub fn prefix(&self) -> &Rc<[u8]> {
        &self.prefix
    }

    /// Where this encoder puts the prefix.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// A read returned a new chunk. Only the chunk framing cares.
    pub fn begin_chunk(&mut self) {
        if self.framing == Framing::Chunk {
            self.at_start = true;
            self.prefix_sent = 0;
        }
    }

    /// Fills `out` with the next slices of the reply to `input` (all of `input` is yet
    /// unanswered) and returns how many it filled: zero only if `input` is empty.
    #[inline]
    pub fn slices<'a>(&'a self, input: &'a [u8], out: &mut [IoSlice<'a>]) -> usize {
        if self.framing == Framing::Chunk && !input.is_empty() && out.len() >= 2 {
            // The common case, and the whole of chunk framing: what is left of the
            // prefix, then the chunk.
            return if self.at_start && !self.prefix.is_empty() {
                out[0] = IoSlice::new(&self.prefix[self.prefix_sent..]);
                out[1] = IoSlice::new(input);
                2
            } else {
                out[0] = IoSlice::new(input);
                1
            };
        }
        self.slices_by_segment(input, out)
    }

    #[inline(never)]
    fn slices_by_segment<'a>(&'a self, input: &'a [u8], out: &mut [IoSlice<'a>]) -> usize {
        let mut filled = 0;
        let mut rest = input;
        let mut at_start = self.at_start;
        let mut prefix_from = self.prefix_sent;
        while !rest.is_empty() && filled < out.len() {
            if at_start && !self.prefix.is_empty() {
                out[filled] = IoSlice::new(&self.prefix[prefix_from..]);
                filled += 1;
                prefix_from = 0;
                if filled == out.len() {
                    break;
                }
            }
            let len = self.segment_len(rest);
            out[filled] = IoSlice::new(&rest[..len]);
            filled += 1;
            at_start = self.ends_line(&rest[..len]);
            rest = &rest[len..];
        }
        filled
    }

    /// Appends the reply to `input` (all of it yet unanswered) to `out`, stopping at the
    /// first segment boundary past `limit` bytes: the same bytes [`slices`](Self::slices)
    /// describes, copied, for replies made of many short lines.
    pub fn render(&self, input: &[u8], out: &mut Vec<u8>, limit: usize) {
        let mut rest = input;
        let mut at_start = self.at_start;
        let mut prefix_from = self.prefix_sent;
        while !rest.is_empty() && out.len() < limit {
            if at_start {
                out.extend_from_slice(&self.prefix[prefix_from..]);
                prefix_from = 0;
            }
            let len = self.segment_len(rest);
            out.extend_from_slice(&rest[..len]);
            at_start = self.ends_line(&rest[..len]);
            rest = &rest[len..];
        }
    }

    /// The whole reply to the chunk begun last went out: the same as
    /// [`advance`](Self::advance) past all of it, in chunk framing.
    #[inline]
    pub fn chunk_answered(&mut self) {
        debug_assert_eq!(self.framing, Framing::Chunk);
        self.at_start = false;
        self.prefix_sent = 0;
    }

    /// `written` bytes of the reply to `input` went out: moves past them and returns how
    /// many bytes of `input` they answered.
    #[inline]
    pub fn advance(&mut self, input: &[u8], written: usize) -> usize {
        if self.framing == Framing::Line {
            return self.advance_by_segment(input, written);
        }
        let mut written = written;
        if self.at_start && !self.prefix.is_empty() {
            let left = self.prefix.len() - self.prefix_sent;
            if written < left {
                self.prefix_sent += written;
                return 0;
            }
            written -= left;
            self.prefix_sent = 0;
        }
        self.at_start = false;
        written.min(input.len())
    }

    #[inline(never)]
    fn advance_by_segment(&mut self, input: &[u8], mut written: usize) -> usize {
        let mut consumed = 0;
        while written > 0 && consumed < input.len() {
            if self.at_start && !self.prefix.is_empty() {
                let left = self.prefix.len() - self.prefix_sent;
                if written < left {
                    self.prefix_sent += written;
                    return consumed;
                }
                written -= left;
                self.prefix_sent = 0;
            }
            self.at_start = false;
            let rest = &input[consumed..];
            let len = self.segment_len(rest);
            let taken = written.min(len);
            consumed += taken;
            written -= taken;
            if taken == len {
                self.at_start = self.ends_line(&rest[..len]);
            }
        }
        consumed
    }

    /// Bytes up to the end of the current segment: the chunk, or the line (its `\n`
    /// included).
    fn segment_len(&self, rest: &[u8]) -> usize {
        match self.framing {
            Framing::Chunk => rest.len(),
            Framing::Line => memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1),
        }
    }

    fn ends_line(&self, segment: &[u8]) -> bool {
        self.framing == Framing::Line && segment.last() == Some(&b'\n')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The reply, computed the obvious way.
    fn expected(prefix: &[u8], framing: Framing, chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut line_start = true;
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            match framing {
                Framing::Chunk => {
                    out.extend_from_slice(prefix);
                    out.extend_from_slice(chunk);
                }
                Framing::Line => {
                    for &b in chunk {
                        if line_start {
                            out.extend_from_slice(prefix);
                        }
                        out.push(b);
                        line_start = b == b'\n';
                    }
                }
            }
        }
        out
    }

    /// Feeds `chunks` through an encoder, as a connection does, with a peer that accepts
    /// at most `window` bytes per write; `build` makes the next piece of reply to send.
    fn feed(
        prefix: &[u8],
        framing: Framing,
        chunks: &[Vec<u8>],
        window: usize,
        build: impl Fn(&Encoder, &[u8]) -> Vec<u8>,
    ) -> Vec<u8> {
        let mut encoder = Encoder::new(prefix.into(), framing);
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            encoder.begin_chunk();
            let mut input = &chunk[..];
            while !input.is_empty() {
                let reply = build(&encoder, input);
                assert!(!reply.is_empty());
                let written = reply.len().min(window);
                out.extend_from_slice(&reply[..written]);
                input = &input[encoder.advance(input, written)..];
            }
        }
        out
    }

    /// The reply as slices, at most `slots` per `writev`.
    fn encode(
        prefix: &[u8],
        framing: Framing,
        chunks: &[Vec<u8>],
        window: usize,
        slots: usize,
    ) -> Vec<u8> {
        feed(prefix, framing, chunks, window, |encoder, input| {
            let mut iov = [IoSlice::new(&[]); 8];
            let n = encoder.slices(input, &mut iov[..slots]);
            iov[..n].iter().flat_map(|s| s.iter().copied()).collect()
        })
    }

    /// The reply rendered into a buffer, `limit` bytes at a time.
    fn encode_rendered(
        prefix: &[u8],
        framing: Framing,
        chunks: &[Vec<u8>],
        window: usize,
        limit: usize,
    ) -> Vec<u8> {
        feed(prefix, framing, chunks, window, |encoder, input| {
            let mut reply = Vec::new();
            encoder.render(input, &mut reply, limit);
            reply
        })
    }

    #[test]
    fn the_seed_session() {
        let chunks = [b"Hello\n".to_vec(), b"World\n".to_vec()];
        for framing in [Framing::Chunk, Framing::Line] {
            let out = encode(b"GOT:", framing, &chunks, usize::MAX, 8);
            assert_eq!(out, b"GOT:Hello\nGOT:World\n");
        }
    }

    #[test]
    fn chunk_framing_prefixes_each_chunk_even_mid_line() {
        let chunks = [b"Hel".to_vec(), b"lo\nWorld\n".to_vec()];
        let out = encode(b"GOT:", Framing::Chunk, &chunks, usize::MAX, 8);
        assert_eq!(out, b"GOT:HelGOT:lo\nWorld\n");
    }

    #[test]
    fn line_framing_streams_a_line_split_across_chunks() {
        let chunks = [b"Hel".to_vec(), b"lo\nWo".to_vec(), b"rld\n".to_vec()];
        let out = encode(b"GOT:", Framing::Line, &chunks, usize::MAX, 8);
        assert_eq!(out, b"GOT:Hello\nGOT:World\n");
    }

    #[test]
    fn a_write_that_stops_inside_the_prefix_resumes_there() {
        let chunks = [b"ab\ncd\n".to_vec()];
        for window in 1..12 {
            let out = encode(b"GOT:", Framing::Line, &chunks, window, 8);
            assert_eq!(out, b"GOT:ab\nGOT:cd\n", "window {window}");
        }
    }

    #[test]
    fn an_empty_prefix_is_a_plain_echo() {
        let chunks = [b"\0\xff\n".to_vec(), b"x".to_vec()];
        for framing in [Framing::Chunk, Framing::Line] {
            assert_eq!(encode(b"", framing, &chunks, 2, 3), b"\0\xff\nx");
        }
    }

    proptest! {
        /// Slices or rendered copies, any chunking, any write sizes: the obvious reply.
        #[test]
        fn any_split_any_window_gives_the_obvious_reply(
            prefix in prop::collection::vec(any::<u8>(), 0..6),
            chunks in prop::collection::vec(
                prop::collection::vec(prop_oneof![Just(b'\n'), any::<u8>()], 0..40), 0..8),
            line in any::<bool>(),
            window in 1usize..50,
            slots in 1usize..6,
            limit in 1usize..30,
        ) {
            let framing = if line { Framing::Line } else { Framing::Chunk };
            let obvious = expected(&prefix, framing, &chunks);
            prop_assert_eq!(&encode(&prefix, framing, &chunks, window, slots), &obvious);
            prop_assert_eq!(&encode_rendered(&prefix, framing, &chunks, window, limit), &obvious);
        }
    }
}
