//! The JSON a request gets on any path that is not an echo: what reached the server
//! (method, path, query, version, headers, body), from whom, over what, and which
//! instance answered. What a proxy did to a request shows here. No environment
//! variables: they hold secrets.

use base64::Engine as _;
use hyper::http::request::Parts;
use serde_json::{Map, Value, json};

use super::{Config, Peer};

/// The description of a request whose head is `parts` and body `body`, as JSON text.
pub(crate) fn describe(
    parts: &Parts,
    body: &[u8],
    who: &Peer,
    config: &Config,
    thread: usize,
) -> Vec<u8> {
    let query = parts.uri.query().unwrap_or_default();
    let mut parsed = Map::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        if let Value::Array(values) = parsed
            .entry(name.into_owned())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            values.push(Value::String(value.into_owned()));
        }
    }
    // In the order received; a repeated name once per value.
    let headers: Vec<Value> = parts
        .headers
        .iter()
        .map(|(name, value)| json!([name.as_str(), String::from_utf8_lossy(value.as_bytes())]))
        .collect();
    let body = match std::str::from_utf8(body) {
        Ok(text) => json!({ "length": body.len(), "text": text }),
        Err(_) => json!({
            "length": body.len(),
            "base64": base64::engine::general_purpose::STANDARD.encode(body),
        }),
    };
    let tls = who.tls.as_ref().map(|tls| {
        json!({
            "version": tls.version,
            "cipher": tls.cipher,
            "sni": tls.sni,
            "alpn": tls.alpn,
        })
    });
    let description = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": { "raw": query, "parsed": parsed },
        "version": format!("{:?}", parts.version),
        "headers": headers,
        "body": body,
        "client": who.client.map(|c| c.to_string()),
        "via": who.via.map(|v| v.to_string()),
        "tls": tls,
        "server": {
            "instance": &*config.instance,
            "host": &*config.host,
            "listening": &*config.listening,
            "thread": thread,
        },
    });
    let mut text = serde_json::to_vec_pretty(&description).unwrap_or_default();
    text.push(b'\n');
    text
}
