//! The `coop-echo` program's parts, as a library so tests and benchmarks can run them
//! in-process: the reply's framing ([`echo`]) and the echo handler ([`serve`]).

#![warn(missing_docs, missing_debug_implementations)]

pub mod echo;
pub mod serve;
