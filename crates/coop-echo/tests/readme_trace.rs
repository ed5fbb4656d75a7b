//! The README's `--trace` excerpt is what the program prints: its lines (ports and
//! descriptors aside) come in that order in a real session of the excerpt's command.

mod common;

use common::{Server, run};

/// A trace line with its numbers that vary from run to run (descriptors, ports) blanked.
fn shape(line: &str) -> String {
    let line = line.split('#').next().unwrap_or_default().trim();
    let mut words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    for i in 0..words.len() {
        if i > 0 && words[i - 1] == "fd" {
            words[i] = "N".into();
        }
        if let Some((host, _)) = words[i].rsplit_once(':') {
            if host.parse::<std::net::IpAddr>().is_ok() {
                words[i] = format!("{host}:PORT");
            }
        }
    }
    words.join(" ")
}

#[test]
fn the_readme_trace_excerpt_is_what_the_program_prints() {
    let readme = include_str!("../../../README.md");
    let start = readme
        .find("$ coop-echo serve --port 25000 --trace --quiet")
        .expect("the excerpt in the README");
    let block = &readme[start..];
    let block = &block[..block.find("```").expect("the excerpt's end")];
    let expected: Vec<String> = block
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("trace: "))
        .map(shape)
        .collect();
    assert!(expected.len() > 10, "{expected:?}");

    let server = Server::start(&["--trace", "--quiet"]);
    let port = server.addr.port().to_string();
    let out = run(&["client", "127.0.0.1", &port], b"Hello\n");
    assert!(out.status.success(), "{out:?}");
    let finish = expected.last().unwrap().clone();
    let log = server.wait_until("the connection's end", |log| {
        log.lines().any(|l| shape(l) == finish)
    });
    let actual: Vec<String> = log
        .lines()
        .filter(|l| l.starts_with("trace: "))
        .map(shape)
        .collect();
    // In order, each where the last left off.
    let mut at = 0;
    for line in &expected {
        match actual[at..].iter().position(|a| a == line) {
            Some(found) => at += found + 1,
            None => panic!("not in the program's trace after line {at}: {line:?}\n{actual:#?}"),
        }
    }
}
