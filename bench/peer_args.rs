//! The command line both peers share: `[--host ADDR] [--port N] [--prefix TEXT]`, with
//! coop-echo's defaults (the port is 25000, the prefix `GOT:`), but loopback by default.

use std::io;

#[allow(
    dead_code,
    reason = "a peer with options of its own calls parse_with instead"
)]
pub fn parse() -> io::Result<(String, u16, Vec<u8>)> {
    parse_with(|_, _| Ok(false))
}

/// As [`parse`], for a peer with options of its own: each flag these shared ones do not
/// know goes to `other` with its value, which returns whether the flag was its own.
pub fn parse_with(
    mut other: impl FnMut(&str, &str) -> io::Result<bool>,
) -> io::Result<(String, u16, Vec<u8>)> {
    let (mut host, mut port, mut prefix) = ("127.0.0.1".to_string(), 25000, b"GOT:".to_vec());
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| bad(format!("{flag} needs a value")))?;
        match flag.as_str() {
            "--host" => host = value,
            "--port" => {
                port = value
                    .parse()
                    .map_err(|_| bad("--port takes 0..65535".into()))?
            }
            "--prefix" => prefix = value.into_bytes(),
            _ if other(&flag, &value)? => {}
            _ => return Err(bad(format!("unknown option {flag}"))),
        }
    }
    Ok((host, port, prefix))
}

pub fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
