//! The command line both peers share: `[--host ADDR] [--port N] [--prefix TEXT]`, with
//! coop-echo's defaults (the port is 25000, the prefix `GOT:`), but loopback by default.

use std::io;

pub fn parse() -> io::Result<(String, u16, Vec<u8>)> {
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
            _ => return Err(bad(format!("unknown option {flag}"))),
        }
    }
    Ok((host, port, prefix))
}

fn bad(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
