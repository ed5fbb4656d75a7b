//! The `coop-echo` program's parts, as a library so tests and benchmarks can run them
//! in-process: the reply's framing ([`echo`]), the echo handler ([`serve`]), the service
//! around it ([`service`]) and the load generator ([`bench`](mod@bench)).

#![warn(missing_docs, missing_debug_implementations)]

pub mod admin;
pub mod bench;
pub mod client;
pub mod echo;
pub mod fault;
pub mod http;
pub mod per_source;
mod plural;
pub mod proxy;
pub mod refused;
pub mod serve;
pub mod service;
pub mod snapshot;
pub mod socket_file;
pub mod tls;
mod tls_conn;
pub mod tls_echo;
pub mod top;
pub mod udp;
pub mod units;
pub mod worker;
