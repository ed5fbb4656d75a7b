//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, versions 1 and 2): a load
//! balancer in front of the server starts each connection with a header that names the
//! client it stands for.
//!
//! The header's syntax is `ppp`'s business; what a server does with a header that comes
//! in pieces, never comes, or lies is this module's.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use coop::net::TcpStream;
use ppp::v2::{self, Command, Protocol, Version};
use ppp::{PartialResult, v1};

/// How long a client may take to send its whole header (or the idle timeout, if
/// shorter). A load balancer sends it with the connection's first bytes.
pub const HEADER_TIME: Duration = Duration::from_secs(5);

/// The longest header accepted, in bytes: a version 2 header with its TLVs (HAProxy's own
/// are a few hundred bytes). A version 1 header is at most 107.
pub const MAX_HEADER: usize = 4096;

/// Who a connection is from, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A client the load balancer relays: its address, and the address it connected to.
    Client {
        /// The client's address.
        source: SocketAddr,
        /// The address the client connected to (the load balancer's).
        destination: SocketAddr,
    },
    /// The load balancer itself, on its own behalf, as its health checks say: version 2
    /// `LOCAL`, version 1 `UNKNOWN`, or (from [`read_header`]) a version 1 header that
    /// names the very connection it came on, as HAProxy 2's checks with `send-proxy` send.
    /// The peer's own address stands.
    Local,
    /// A client the header cannot name (version 2 with no addresses, or unix ones): the
    /// peer's own address stands.
    Unnamed,
}

/// What the bytes received so far make of a header.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header, `len` bytes long; what follows it is the client's data.
    Header {
        /// Who the connection is from.
        origin: Origin,
        /// The header's length in bytes.
        len: usize,
    },
    /// So far a header's beginning: more bytes may complete it.
    Incomplete,
    /// Not a header, whatever follows.
    Invalid(String),
}

/// The longest version 1 line, its CRLF included.
const V1_MAX: usize = 107;

/// The first 12 bytes of every version 2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Reads the bytes received so far.
pub fn parse(input: &[u8]) -> Parsed {
    let v2 = if input.len() < V2_SIGNATURE.len() {
        V2_SIGNATURE.starts_with(input)
    } else {
        input.starts_with(V2_SIGNATURE)
    };
    let parsed = if v2 { parse_v2(input) } else { parse_v1(input) };
    match parsed {
        Parsed::Incomplete if input.len() >= MAX_HEADER => {
            Parsed::Invalid(format!("no complete PROXY header in {MAX_HEADER} bytes"))
        }
        parsed => parsed,
    }
}

fn parse_v1(input: &[u8]) -> Parsed {
    // `UNKNOWN` may be followed by anything up to the line's end, which the receiver
    // ignores; `ppp` splits a line into at most 7 fields and would not find its end.
    if let Some(rest) = input.strip_prefix(b"PROXY UNKNOWN") {
        let line = &input[..input.len().min(V1_MAX)];
        return match line.windows(2).position(|w| w == b"\r\n") {
            Some(end) if matches!(rest.first(), Some(b' ' | b'\r')) => Parsed::Header {
                origin: Origin::Local,
                len: end + 2,
            },
            Some(_) => Parsed::Invalid("a bad PROXY v1 header: no space after UNKNOWN".into()),
            None if input.len() >= V1_MAX => {
                Parsed::Invalid(format!("a PROXY v1 line longer than {V1_MAX} bytes"))
            }
            None => Parsed::Incomplete,
        };
    }
    let result = v1::Header::try_from(input);
    // `ppp` takes a line that lacks a field for one whose rest is still coming; once its
    // CRLF is in, no more bytes can complete it, and waiting would only delay the reason.
    let ended = input[..input.len().min(V1_MAX)]
        .windows(2)
        .any(|w| w == b"\r\n");
    if result.is_incomplete() && !ended {
        return Parsed::Incomplete;
    }
    match result {
        Ok(header) => {
            let origin = match header.addresses {
                v1::Addresses::Tcp4(a) => client(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                v1::Addresses::Tcp6(a) => client(
                    a.source_address,
                    a.source_port,
                    a.destination_address,
                    a.destination_port,
                ),
                v1::Addresses::Unknown => Origin::Local,
            };
            Parsed::Header {
                origin,
                len: header.header.len(),
            }
        }
        Err(_) if !input.starts_with(b"PROXY") => Parsed::Invalid("no PROXY header".into()),
        // `ppp` takes a line that ends just before its last field (the destination
        // port) for a bad one: more bytes may still bring it.
        Err(v1::BinaryParseError::Parse(v1::ParseError::InvalidDestinationPort(Some(e))))
            if *e.kind() == std::num::IntErrorKind::Empty && !input.contains(&b'\r') =>
        {
            Parsed::Incomplete
        }
        Err(e) => Parsed::Invalid(format!("a bad PROXY v1 header: {}", v1_reason(input, &e))),
    }
}

/// What was wrong with a version 1 line, in the log's words, naming the field and
/// quoting it (`ppp`'s own messages are sentences of their own, and do not say which
/// value they refused).
fn v1_reason(input: &[u8], error: &v1::BinaryParseError) -> String {
    use v1::ParseError as E;
    let line = &input[..input.len().min(V1_MAX)];
    let line = line.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let fields: Vec<&str> = line.split(' ').collect();
    // Quoted as received, escaped and cut short: a field of a bad header may be anything.
    let quoted = |at: usize| {
        let field: String = fields
            .get(at)
            .copied()
            .unwrap_or_default()
            .chars()
            .take(40)
            .collect();
        format!("{:?}", field)
    };
    const NAMES: [&str; 6] = [
        "PROXY",
        "protocol",
        "source address",
        "destination address",
        "source port",
        "destination port",
    ];
    let family = if fields.get(1) == Some(&"TCP6") {
        "IPv6"
    } else {
        "IPv4"
    };
    let e = match error {
        v1::BinaryParseError::InvalidUtf8(_) => return "the line is not text (UTF-8)".into(),
        v1::BinaryParseError::Parse(e) => e,
    };
    match e {
        E::InvalidPrefix | E::MissingPrefix => format!("it begins with {}, not PROXY", quoted(0)),
        E::Partial => "incomplete".into(),
        E::MissingProtocol
        | E::MissingSourceAddress
        | E::MissingDestinationAddress
        | E::MissingSourcePort
        | E::MissingDestinationPort => match NAMES.get(fields.len()) {
            Some(missing) => format!("the line ends before the {missing}"),
            None => "the line ends too soon".into(),
        },
        E::HeaderTooLong => format!("longer than {V1_MAX} bytes"),
        E::InvalidProtocol => format!("the protocol {} is not TCP4, TCP6 or UNKNOWN", quoted(1)),
        E::MissingNewLine | E::InvalidSuffix => {
            "something other than CRLF after the destination port".into()
        }
        E::InvalidSourceAddress(_) => {
            format!(
                "the source address {} is not an {family} address",
                quoted(2)
            )
        }
        E::InvalidDestinationAddress(_) => {
            format!(
                "the destination address {} is not an {family} address",
                quoted(3)
            )
        }
        E::InvalidSourcePort(Some(_)) => {
            format!(
                "the source port {} is not a number from 0 to 65535",
                quoted(4)
            )
        }
        E::InvalidDestinationPort(Some(_)) => {
            format!(
                "the destination port {} is not a number from 0 to 65535",
                quoted(5)
            )
        }
        E::InvalidSourcePort(None) => format!("the source port {} begins with a 0", quoted(4)),
        E::InvalidDestinationPort(None) => {
            format!("the destination port {} begins with a 0", quoted(5))
        }
    }
}

/// What was wrong with a version 2 header, in the log's words.
fn v2_reason(error: &v2::ParseError) -> String {
    use v2::ParseError as E;
    match *error {
        E::Incomplete(n) => format!("only {n} bytes"),
        E::Prefix => "no PROXY v2 signature".into(),
        // `ppp` gives the version and the family as the high halves of their bytes.
        E::Version(v) => format!("version {}, not 2", v >> 4),
        E::Command(c) => format!("an unknown command {c:#x}"),
        E::AddressFamily(f) => format!("an unknown address family {:#x}", f >> 4),
        E::Protocol(p) => format!("an unknown transport protocol {p:#x}"),
        E::Partial(has, needs) => format!("{has} of the {needs} bytes it announces"),
        E::InvalidAddresses(has, needs) => {
            format!("{has} bytes of addresses, where their family needs {needs}")
        }
        E::InvalidTLV(kind, len) => {
            format!("a TLV of type {kind:#x} and {len} bytes runs past the header's end")
        }
        E::Leftovers(n) => format!("{n} bytes after the addresses and TLVs"),
    }
}

fn parse_v2(input: &[u8]) -> Parsed {
    // The length it announces (after the 16 fixed bytes), refused before it is waited for.
    if let Some(&[high, low]) = input.get(14..16) {
        let announced = 16 + usize::from(u16::from_be_bytes([high, low]));
        if announced > MAX_HEADER {
            return Parsed::Invalid(format!(
                "a PROXY v2 header of {announced} bytes (at most {MAX_HEADER})"
            ));
        }
    }
    let result = v2::Header::try_from(input);
    if result.is_incomplete() {
        return Parsed::Incomplete;
    }
    let header = match result {
        Ok(header) => header,
        Err(e) => {
            return Parsed::Invalid(format!("a bad PROXY v2 header: {}", v2_reason(&e)));
        }
    };
    let origin = match (header.command, header.protocol, header.addresses) {
        (Command::Local, ..) => Origin::Local,
        (_, Protocol::Datagram, _) => {
            return Parsed::Invalid("a PROXY v2 header for a datagram".into());
        }
        (_, _, v2::Addresses::IPv4(a)) => client(
            a.source_address,
            a.source_port,
            a.destination_address,
            a.destination_port,
        ),
        (_, _, v2::Addresses::IPv6(a)) => client(
            a.source_address,
            a.source_port,
            a.destination_address,
            a.destination_port,
        ),
        // The specification: a receiver accepts these, and uses the real addresses.
        (_, _, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => Origin::Unnamed,
    };
    Parsed::Header {
        origin,
        len: header.len(),
    }
}

/// A relayed client, from the addresses and ports a header gives.
fn client<A: Into<IpAddr>>(source: A, sport: u16, destination: A, dport: u16) -> Origin {
    Origin::Client {
        source: SocketAddr::new(source.into(), sport),
        destination: SocketAddr::new(destination.into(), dport),
    }
}

/// Why a connection's header was refused.
#[derive(Debug)]
pub enum Refusal {
    /// The peer closed before sending a byte: a port probe, not worth a warning.
    Silent,
    /// Anything else: said in one line.
    Bad(String),
}

impl From<io::Error> for Refusal {
    fn from(e: io::Error) -> Refusal {
        Refusal::Bad(e.to_string())
    }
}

/// Reads the header at the start of `stream` (whose peer, as accepted, is `peer`),
/// waiting at most `limit` for all of it. Returns who the connection is from, and the
/// client's bytes that came after the header (to be answered like any others). Reads no
/// further than the header's first `MAX_HEADER` bytes.
///
/// Cancel safe in the sense that matters here: on any error the connection is closed.
pub async fn read_header(
    stream: &TcpStream,
    peer: SocketAddr,
    limit: Duration,
) -> Result<(Origin, Vec<u8>), Refusal> {
    let mut received = Vec::new();
    let reading = async {
        let mut chunk = [0; 512];
        loop {
            let room = (MAX_HEADER - received.len()).min(chunk.len());
            let n = match stream.read(&mut chunk[..room]).await {
                // A peer that resets before saying anything is a probe too.
                Err(e) if received.is_empty() && gone(&e) => return Err(Refusal::Silent),
                read => read?,
            };
            if n == 0 {
                return Err(if received.is_empty() {
                    Refusal::Silent
                } else {
                    Refusal::Bad(format!(
                        "closed after {} bytes of an incomplete PROXY header",
                        received.len()
                    ))
                });
            }
            received.extend_from_slice(&chunk[..n]);
            match parse(&received) {
                Parsed::Header { origin, len } => return Ok((origin, len)),
                Parsed::Incomplete => {}
                Parsed::Invalid(why) => return Err(Refusal::Bad(why)),
            }
        }
    };
    match coop::time::timeout(limit, reading).await {
        Ok(Ok((mut origin, len))) => {
            // HAProxy's checks with `send-proxy` (v1 has no LOCAL) send a header that
            // describes the check's own connection: take that for the load balancer
            // speaking for itself. (A v2 header always says so with LOCAL.) The peer as
            // accepted, not as the socket says now: a plain check resets at once, and a
            // reset socket has no peer left to ask for.
            let v1 = received.starts_with(b"PROXY ");
            if let Origin::Client { source, .. } = origin {
                if v1 && same(peer, source) {
                    origin = Origin::Local;
                }
            }
            received.drain(..len);
            Ok((origin, received))
        }
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => Err(Refusal::Bad(format!(
            "no complete PROXY header within {} s",
            limit.as_secs_f64()
        ))),
    }
}

/// The same endpoint, an IPv4 address seen through a dual-stack socket (`::ffff:a.b.c.d`)
/// included.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

/// The peer went away.
fn gone(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
    )
}

/// Which header a client sends (`--send-proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendProxy {
    /// The text header: `PROXY TCP4 ...\r\n`.
    V1,
    /// The binary header.
    V2,
}

/// Begins `stream` with the header a load balancer would send for it: its own address
/// as the client's, its peer's as the server's (`client` and `bench --send-proxy`).
pub async fn send_header(stream: &coop::TcpStream, version: SendProxy) -> io::Result<()> {
    let header = header(version, stream.local_addr()?, stream.peer_addr()?)?;
    stream.write_all(&header).await
}

/// The header a load balancer would send for a client at `source` connected to
/// `destination`.
pub fn header(
    version: SendProxy,
    source: SocketAddr,
    destination: SocketAddr,
) -> io::Result<Vec<u8>> {
    // Both ends in one family, as a header requires: an IPv4 address seen from an IPv6
    // socket is written as IPv4-mapped IPv6.
    let (source, destination) = match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V6(d)) => (
            SocketAddr::new(s.ip().to_ipv6_mapped().into(), s.port()),
            SocketAddr::V6(d),
        ),
        (SocketAddr::V6(s), SocketAddr::V4(d)) => (
            SocketAddr::V6(s),
            SocketAddr::new(d.ip().to_ipv6_mapped().into(), d.port()),
        ),
        pair => pair,
    };
    match version {
        SendProxy::V1 => Ok(v1::Addresses::from((source, destination))
            .to_string()
            .into_bytes()),
        SendProxy::V2 => v2::Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (source, destination),
        )
        .build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn version_1_names_the_client() {
        let input = b"PROXY TCP4 192.0.2.7 198.51.100.1 50412 25000\r\nHello";
        let Parsed::Header { origin, len } = parse(input) else {
            panic!("{:?}", parse(input))
        };
        assert_eq!(&input[len..], b"Hello");
        assert_eq!(
            origin,
            Origin::Client {
                source: addr("192.0.2.7:50412"),
                destination: addr("198.51.100.1:25000")
            }
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 50412 25000\r\n";
        assert!(matches!(
            parse(six),
            Parsed::Header { origin: Origin::Client { source, .. }, len: 48 }
                if source == addr("[2001:db8::7]:50412")
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                origin: Origin::Local,
                len: 15
            }
        );
        // UNKNOWN may carry addresses; the receiver ignores them.
        let unknown = b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\nx";
        assert!(matches!(
            parse(unknown),
            Parsed::Header { origin: Origin::Local, len } if len == unknown.len() - 1
        ));
    }

    #[test]
    fn version_2_names_the_client_and_local_is_a_check() {
        let header = header(
            SendProxy::V2,
            addr("192.0.2.7:50412"),
            addr("10.0.0.1:25000"),
        )
        .unwrap();
        let mut input = header.clone();
        input.extend_from_slice(b"Hello");
        assert_eq!(
            parse(&input),
            Parsed::Header {
                origin: Origin::Client {
                    source: addr("192.0.2.7:50412"),
                    destination: addr("10.0.0.1:25000")
                },
                len: header.len()
            }
        );
        let local = v2::Builder::with_addresses(
            Version::Two | Command::Local,
            Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(
            parse(&local),
            Parsed::Header {
                origin: Origin::Local,
                len: 16
            }
        );
        // TLVs are skipped over.
        let with_tlvs = v2::Builder::with_addresses(
            Version::Two | Command::Proxy,
            Protocol::Stream,
            (addr("192.0.2.7:1"), addr("10.0.0.1:2")),
        )
        .write_tlv(0x05, b"unique-id-1234")
        .unwrap()
        .build()
        .unwrap();
        assert!(matches!(parse(&with_tlvs), Parsed::Header { len, .. } if len == with_tlvs.len()));
    }

    #[test]
    fn what_is_not_a_header_says_why() {
        for (input, why) in [
            (&b"Hello\n"[..], "no PROXY header"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 80 x\r\n", "bad PROXY v1"),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 80 81\r\n", "bad PROXY v1"),
            (b"\r\n\r\n\0\r\nQUIT\n\x31\x11\0\x0c", "bad PROXY v2"),
            (b"\r\n\r\n\0\r\nQUIX\n", "no PROXY header"),
        ] {
            match parse(input) {
                Parsed::Invalid(reason) => assert!(reason.contains(why), "{reason}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
        let mut long = b"PROXY TCP4 ".to_vec();
        long.resize(120, b'1');
        assert!(matches!(parse(&long), Parsed::Invalid(_)));
        // A v2 header that announces more than the limit is refused at once, from its
        // first 16 bytes.
        let huge = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\xff\xff";
        assert!(matches!(parse(huge), Parsed::Invalid(why) if why.contains("65551 bytes")));
        // A reason is one line, whatever `ppp` quotes.
        match parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n") {
            Parsed::Invalid(why) => assert!(!why.contains(['\r', '\n']), "{why:?}"),
            other => panic!("{other:?}"),
        }
    }

    /// A bad header's reason is in the log's own words (lowercase, no full stop, as every
    /// other reason), and names what was wrong, not `ppp`'s sentence.
    #[test]
    fn a_bad_header_says_what_was_wrong_in_our_words() {
        let mut v2_short = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x08".to_vec();
        v2_short.extend_from_slice(&[1; 8]); // IPv4 addresses and ports need 12
        for (input, says) in [
            (
                &b"PROXY TCP5 1.2.3.4 5.6.7.8 80 81\r\n"[..],
                "v1 header: the protocol \"TCP5\" is not TCP4, TCP6 or UNKNOWN",
            ),
            (
                b"PROXY TCP4 1.2.3.x 5.6.7.8 80 81\r\n",
                "v1 header: the source address \"1.2.3.x\" is not an IPv4 address",
            ),
            (
                b"PROXY TCP6 ::1 5.6.7.8 80 81\r\n",
                "v1 header: the destination address \"5.6.7.8\" is not an IPv6 address",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 8x 81\r\n",
                "v1 header: the source port \"8x\" is not a number from 0 to 65535",
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 80 65536\r\n",
                "v1 header: the destination port \"65536\" is not a number from 0 to 65535",
            ),
            (
                b"PROXY TCP4 1.2.3.4\r\n",
                "v1 header: the line ends before the destination address",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1 header: "),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1 header: "),
            (b"PROXY TCP4 \xff.2.3.4 5.6.7.8 1 2\r\n", "v1 header: "),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
                "v2 header: version 3, not 2",
            ),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x2f\x11\x00\x0c",
                "v2 header: an unknown command",
            ),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x21\x51\x00\x0c",
                "v2 header: an unknown address family",
            ),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x21\x13\x00\x0c",
                "v2 header: an unknown transport protocol",
            ),
            (
                &v2_short,
                "v2 header: 8 bytes of addresses, where their family needs 12",
            ),
        ] {
            let Parsed::Invalid(why) = parse(input) else {
                panic!("{input:?}: {:?}", parse(input))
            };
            assert!(why.contains(says), "{input:?}: {why}");
            let reason = why.split_once(" header: ").map_or("", |(_, r)| r);
            assert!(
                reason.starts_with(|c: char| !c.is_uppercase()),
                "{input:?}: {why}"
            );
            assert!(!reason.ends_with('.'), "{input:?}: {why}");
            assert!(!reason.contains("Header"), "{input:?}: {why}");
        }
    }

    #[test]
    fn unknown_may_carry_any_words_and_v2_without_addresses_names_no_one() {
        let long = b"PROXY UNKNOWN a b c d e f g h\r\nHello";
        assert_eq!(
            parse(long),
            Parsed::Header {
                origin: Origin::Local,
                len: long.len() - 5
            }
        );
        assert_eq!(parse(b"PROXY UNKNOWN a b c d e"), Parsed::Incomplete);
        assert!(matches!(parse(b"PROXY UNKNOWNX\r\n"), Parsed::Invalid(_)));
        let mut endless = b"PROXY UNKNOWN ".to_vec();
        endless.resize(V1_MAX, b'x');
        assert!(matches!(parse(&endless), Parsed::Invalid(_)));
        // v2 PROXY with unspecified addresses: a client, unnamed; not a check.
        let unspecified = b"\r\n\r\n\0\r\nQUIT\n\x21\x00\x00\x00";
        assert_eq!(
            parse(unspecified),
            Parsed::Header {
                origin: Origin::Unnamed,
                len: 16
            }
        );
    }

    /// Headers of every kind a load balancer sends: v1 TCP4/TCP6, v2 PROXY (with TLVs
    /// or not), v1 UNKNOWN with words after it, v2 LOCAL.
    fn any_header() -> impl Strategy<Value = Vec<u8>> {
        let unknown = proptest::collection::vec("[a-z0-9:.]{1,8}", 0..8)
            .prop_map(|words| format!("PROXY UNKNOWN {}\r\n", words.join(" ")).into_bytes())
            .prop_filter("within 107 bytes", |line| line.len() <= V1_MAX);
        let local = Just(b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec());
        let with_tlvs = (
            any_addressed(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|((source, destination), value)| {
                v2::Builder::with_addresses(
                    Version::Two | Command::Proxy,
                    Protocol::Stream,
                    (source, destination),
                )
                .write_tlv(0xE0, &value)
                .unwrap()
                .build()
                .unwrap()
            });
        prop_oneof![addressed_header(), unknown, local, with_tlvs]
    }

    fn any_addressed() -> impl Strategy<Value = (SocketAddr, SocketAddr)> {
        let ip4 = any::<[u8; 4]>().prop_map(std::net::IpAddr::from);
        let ip6 = any::<[u16; 8]>().prop_map(std::net::IpAddr::from);
        (prop_oneof![ip4, ip6], any::<u16>(), any::<u16>()).prop_map(|(ip, sp, dp)| {
            let destination = if ip.is_ipv4() {
                addr("10.0.0.1:0")
            } else {
                addr("[2001:db8::1]:0")
            };
            (
                SocketAddr::new(ip, sp),
                SocketAddr::new(destination.ip(), dp),
            )
        })
    }

    fn addressed_header() -> impl Strategy<Value = Vec<u8>> {
        (any_addressed(), any::<bool>()).prop_map(|((source, destination), v2)| {
            let version = if v2 { SendProxy::V2 } else { SendProxy::V1 };
            header(version, source, destination).unwrap()
        })
    }

    proptest! {
        /// Whatever arrives, the parser answers (never panics), and only a header is
        /// taken for one.
        #[test]
        fn any_bytes_get_an_answer(input in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Parsed::Header { len, .. } = parse(&input) {
                prop_assert!(len <= input.len());
            }
        }

        /// A header with any byte changed, or cut anywhere, gets an answer too.
        #[test]
        fn any_damaged_header_gets_an_answer(
            header in any_header(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut damaged = header.clone();
            damaged[at.index(header.len())] = byte;
            damaged.truncate(cut.index(header.len() + 1));
            if let Parsed::Header { len, .. } = parse(&damaged) {
                prop_assert!(len <= damaged.len());
            }
        }

        /// A header split anywhere is incomplete until its last byte, then parsed as
        /// whole; what follows it is left alone.
        #[test]
        fn a_header_in_any_split_is_parsed_the_same(
            header in any_header(),
            rest in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let whole = parse(&header);
            let Parsed::Header { len, .. } = whole else {
                return Err(TestCaseError::fail(format!("{header:?}: {whole:?}")));
            };
            prop_assert_eq!(len, header.len());
            for cut in 0..header.len() {
                prop_assert_eq!(parse(&header[..cut]), Parsed::Incomplete, "cut at {}", cut);
            }
            let mut more = header.clone();
            more.extend_from_slice(&rest);
            prop_assert_eq!(parse(&more), whole);
        }
    }
}
