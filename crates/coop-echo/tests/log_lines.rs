//! The README's table of log lines and the messages the server logs at info and above
//! are kept in step: each message in the source (coop-echo's, and the coop library's,
//! which logs under the server) has its row, at its level, and each row has its message.

use std::path::{Path, PathBuf};

/// A message as the source writes it: its level and its format string.
#[derive(Debug)]
struct Message {
    level: &'static str,
    format: String,
    at: String,
}

impl Message {
    /// The fixed text between the placeholders, trimmed: what a row must show, in order.
    fn pieces(&self) -> Vec<String> {
        let mut pieces = Vec::new();
        let mut rest = self.format.as_str();
        while let Some(open) = rest.find('{') {
            pieces.push(rest[..open].to_string());
            let close = rest[open..].find('}').expect("a closed placeholder") + open;
            rest = &rest[close + 1..];
        }
        pieces.push(rest.to_string());
        pieces
            .iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// Whether `line` (a row's example line) shows every piece, in order.
    fn shown_by(&self, line: &str) -> bool {
        let mut rest = line;
        for piece in self.pieces() {
            match rest.find(&piece) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// Every `tracing::info!`, `warn!` and `error!` under `dir`, with its format string.
fn messages_in(dir: &Path) -> Vec<Message> {
    let mut files = Vec::new();
    rust_files(dir, &mut files);
    let mut messages = Vec::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        for level in ["info", "warn", "error"] {
            let call = format!("tracing::{level}!(");
            for (offset, _) in source.match_indices(&call) {
                let line = source[..offset].lines().count();
                let at = format!("{}:{line}", file.display());
                let after = source[offset + call.len()..].trim_start();
                let format = string_literal(after)
                    .unwrap_or_else(|| panic!("{at}: the message is not a string literal"));
                messages.push(Message { level, format, at });
            }
        }
    }
    messages
}

/// The string literal `text` starts with, unescaped enough to compare with prose.
fn string_literal(text: &str) -> Option<String> {
    let mut chars = text.strip_prefix('"')?.chars().peekable();
    let mut value = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                // A line continuation: the newline and the next line's indentation go.
                '\n' => while chars.next_if(|c| c.is_whitespace()).is_some() {},
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// The README's log-line table: each row's example line and level.
fn readme_rows() -> Vec<(String, String)> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let readme = std::fs::read_to_string(readme).unwrap();
    let table = readme
        .split_once("What the log lines mean")
        .expect("the README's log-line table")
        .1;
    table
        .lines()
        .skip_while(|l| !l.starts_with("| line |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let line = cells[0].trim_start_matches('|').trim().trim_matches('`');
            (line.to_string(), cells[1].trim().to_string())
        })
        .collect()
}

#[test]
fn every_log_line_at_info_and_above_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut messages = messages_in(&root.join("src"));
    messages.extend(messages_in(&root.join("../coop/src")));
    assert!(messages.len() >= 10, "found only {messages:#?}");
    let rows = readme_rows();
    assert!(!rows.is_empty(), "no rows in the README's log-line table");

    let missing: Vec<String> = messages
        .iter()
        .filter(|m| {
            !rows
                .iter()
                .any(|(line, level)| level == m.level && m.shown_by(line))
        })
        .map(|m| format!("{} ({}): {:?}", m.at, m.level, m.format))
        .collect();
    assert!(
        missing.is_empty(),
        "not in the README's table (a row at the same level showing each fixed piece):\n{}",
        missing.join("\n")
    );

    let stale: Vec<String> = rows
        .iter()
        .filter(|(line, level)| {
            !messages
                .iter()
                .any(|m| m.level == level && m.shown_by(line))
        })
        .map(|(line, level)| format!("{line} ({level})"))
        .collect();
    assert!(
        stale.is_empty(),
        "rows of the README's table that the server never logs:\n{}",
        stale.join("\n")
    );
}
