//! What the load generator sends, and the check of every byte that comes back.
//!
//! Message `k` of connection `c` is `size - 1` bytes read off a [`Tape`] at an offset
//! that depends on `c` and `k`, then a newline. The tape's alphabet leaves out every
//! byte of the prefix, so in the reply a prefix can never be mistaken for payload, even
//! in chunk framing where the server puts one wherever its reads happened to end.

use std::io::IoSlice;
use std::rc::Rc;

use crate::echo::Framing;

/// The bytes messages are cut from: the alphabet, repeated to cover any offset.
#[derive(Debug)]
pub struct Tape {
    bytes: Box<[u8]>,
    period: usize,
    /// How far apart consecutive messages start: 13 letters, modulo the period.
    step: usize,
    size: usize,
}

impl Tape {
    /// A tape for messages of `size` bytes (at least 1) that must not contain any byte of
    /// `prefix`. `None` if the prefix leaves no letters to write with.
    pub fn new(size: usize, prefix: &[u8]) -> Option<Tape> {
        let alphabet: Vec<u8> = (b'a'..=b'z')
            .chain(b'A'..=b'Z')
            .chain(b'0'..=b'9')
            .filter(|b| !prefix.contains(b))
            .collect();
        if alphabet.is_empty() || size == 0 {
            return None;
        }
        let period = alphabet.len();
        let bytes = alphabet
            .iter()
            .copied()
            .cycle()
            .take(size - 1 + period)
            .collect();
        Some(Tape {
            bytes,
            period,
            step: 13 % period,
            size,
        })
    }

    /// Bytes per message, newline included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Where message 0 of `connection` starts on the tape.
    pub fn first(&self, connection: usize) -> Cursor {
        Cursor(connection.wrapping_mul(7) % self.period)
    }

    /// Where the message after the one at `cursor` starts: 13 letters on, so that
    /// consecutive messages differ. (No division: this runs once per message.)
    pub fn next(&self, cursor: Cursor) -> Cursor {
        let mut at = cursor.0 + self.step;
        if at >= self.period {
            at -= self.period;
        }
        Cursor(at)
    }

    /// The message at `cursor`, from byte `from` on, as at most two slices.
    pub fn slices(&self, cursor: Cursor, from: usize) -> [IoSlice<'_>; 2] {
        let body = self.body(cursor);
        if from < body.len() {
            [IoSlice::new(&body[from..]), IoSlice::new(b"\n")]
        } else {
            [IoSlice::new(&b"\n"[from - body.len()..]), IoSlice::new(&[])]
        }
    }

    /// The message at `cursor` without its newline.
    fn body(&self, cursor: Cursor) -> &[u8] {
        &self.bytes[cursor.0..cursor.0 + self.size - 1]
    }
}

/// A message's place on the [`Tape`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(usize);

/// A reply that was not the echo of what was sent.
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Which message of the connection.
    pub message: u64,
}

/// Checks one connection's replies as they arrive, byte for byte.
#[derive(Debug)]
pub struct Verifier {
    tape: Rc<Tape>,
    prefix: Rc<[u8]>,
    framing: Framing,
    /// The message whose reply is arriving: its number, and its place on the tape.
    message: u64,
    cursor: Cursor,
    /// Bytes of it already checked.
    at: usize,
    /// Bytes of a prefix already matched (0: not inside one).
    in_prefix: usize,
    /// A prefix must come next (the start of the stream; in line framing, every line).
    prefix_due: bool,
}

impl Verifier {
    /// A verifier for `connection`'s replies, whose first message is number 0.
    pub fn new(tape: Rc<Tape>, prefix: Rc<[u8]>, framing: Framing, connection: usize) -> Self {
        let prefix_due = !prefix.is_empty();
        let cursor = tape.first(connection);
        Verifier {
            tape,
            prefix,
            framing,
            message: 0,
            cursor,
            at: 0,
            in_prefix: 0,
            prefix_due,
        }
    }

    /// Checks `reply`, the next bytes from the server; returns how many messages it
    /// completed.
    pub fn feed(&mut self, mut reply: &[u8]) -> Result<u64, Mismatch> {
        let mismatch = |message| Err(Mismatch { message });
        let mut completed = 0;
        while !reply.is_empty() {
            let starts_prefix = self.framing == Framing::Chunk
                && !self.prefix.is_empty()
                && reply[0] == self.prefix[0];
            if self.in_prefix > 0 || self.prefix_due || starts_prefix {
                let want = &self.prefix[self.in_prefix..];
                let n = want.len().min(reply.len());
                if reply[..n] != want[..n] {
                    return mismatch(self.message);
                }
                self.in_prefix += n;
                if self.in_prefix == self.prefix.len() {
                    self.in_prefix = 0;
                }
                self.prefix_due = self.prefix_due && self.in_prefix != 0;
                reply = &reply[n..];
                continue;
            }
            let size = self.tape.size();
            let body = self.tape.body(self.cursor);
            let n = reply.len().min(size - self.at);
            // The expected bytes: what is left of the body, then the newline.
            let in_body = n.min(body.len().saturating_sub(self.at));
            let expected = &body[self.at..self.at + in_body];
            let n =
                if reply[..in_body] == *expected && reply[in_body..n].iter().all(|&b| b == b'\n') {
                    n
                } else {
                    // Compared first, searched only on a difference: a prefix byte is never
                    // payload, so the first difference is either a prefix or an error.
                    let differs = (0..n).find(|&i| reply[i] != *expected.get(i).unwrap_or(&b'\n'));
                    match differs {
                        Some(i) if starts_prefix_at(self, reply, i) => i,
                        _ => return mismatch(self.message),
                    }
                };
            self.at += n;
            reply = &reply[n..];
            if self.at == size {
                self.at = 0;
                self.message += 1;
                self.cursor = self.tape.next(self.cursor);
                completed += 1;
                self.prefix_due = self.framing == Framing::Line && !self.prefix.is_empty();
            }
        }
        Ok(completed)
    }
}

/// In chunk framing a new chunk's prefix may start anywhere in the reply.
fn starts_prefix_at(verifier: &Verifier, reply: &[u8], i: usize) -> bool {
    verifier.framing == Framing::Chunk
        && verifier
            .prefix
            .first()
            .is_some_and(|&first| reply[i] == first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::echo::Encoder;

    fn message(tape: &Tape, connection: usize, k: u64) -> Vec<u8> {
        let mut cursor = tape.first(connection);
        for _ in 0..k {
            cursor = tape.next(cursor);
        }
        tape.slices(cursor, 0)
            .iter()
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    /// The server's reply to `chunks`, through the real encoder.
    fn reply(prefix: &[u8], framing: Framing, chunks: &[&[u8]]) -> Vec<u8> {
        let mut encoder = Encoder::new(prefix.into(), framing);
        let mut out = Vec::new();
        for chunk in chunks {
            encoder.begin_chunk();
            let mut input = *chunk;
            while !input.is_empty() {
                let mut iov = [IoSlice::new(&[]); 8];
                let n = encoder.slices(input, &mut iov);
                let bytes: Vec<u8> = iov[..n].iter().flat_map(|s| s.iter().copied()).collect();
                out.extend_from_slice(&bytes);
                input = &input[encoder.advance(input, bytes.len())..];
            }
        }
        out
    }

    #[test]
    fn messages_avoid_the_prefix_and_end_in_a_newline() {
        let tape = Tape::new(64, b"GOT:").unwrap();
        for k in 0..100 {
            let m = message(&tape, 3, k);
            assert_eq!(m.len(), 64);
            assert_eq!(m.last(), Some(&b'\n'));
            assert!(!m.iter().any(|b| b"GOT:".contains(b)));
        }
        assert_ne!(message(&tape, 0, 0), message(&tape, 0, 1));
        assert_ne!(message(&tape, 0, 0), message(&tape, 1, 0));
        let one = Tape::new(1, b"").unwrap();
        assert_eq!(message(&one, 0, 0), b"\n");
    }

    #[test]
    fn replies_in_any_framing_and_any_split_verify() {
        let tape = Rc::new(Tape::new(10, b"GOT:").unwrap());
        let sent: Vec<u8> = (0..5).flat_map(|k| message(&tape, 2, k)).collect();
        for (prefix, framing) in [
            (&b"GOT:"[..], Framing::Chunk),
            (b"GOT:", Framing::Line),
            (b"", Framing::Chunk),
        ] {
            // The server read the stream in uneven chunks.
            let chunks: Vec<&[u8]> = sent.chunks(7).collect();
            let answer = reply(prefix, framing, &chunks);
            for piece in [1, 3, 64] {
                let mut verifier = Verifier::new(Rc::clone(&tape), prefix.into(), framing, 2);
                let done: u64 = answer
                    .chunks(piece)
                    .map(|p| verifier.feed(p).unwrap())
                    .sum();
                assert_eq!(done, 5, "{framing:?} {prefix:?} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_wrong_byte_is_caught() {
        let tape = Rc::new(Tape::new(10, b"GOT:").unwrap());
        let mut answer = reply(b"GOT:", Framing::Line, &[&message(&tape, 0, 0)]);
        answer[6] ^= 1;
        let mut verifier =
            Verifier::new(Rc::clone(&tape), Rc::from(&b"GOT:"[..]), Framing::Line, 0);
        assert_eq!(verifier.feed(&answer), Err(Mismatch { message: 0 }));

        // Another connection's message is not this one's.
        let other = reply(b"", Framing::Chunk, &[&message(&tape, 1, 0)]);
        let mut verifier = Verifier::new(tape, Rc::from(&b""[..]), Framing::Chunk, 0);
        assert!(verifier.feed(&other).is_err());
    }
}
