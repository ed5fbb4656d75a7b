//! Every example answers `--help` with its usage (exit 0), before it binds anything.
#![cfg(not(miri))]

mod common;

#[test]
fn every_example_answers_help_with_its_usage() {
    for name in ["seed_echo", "chat", "http_hello"] {
        let out = std::process::Command::new(common::example(name))
            .arg("--help")
            .output()
            .expect("run the example");
        assert!(out.status.success(), "{name} --help: {out:?}");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.starts_with(&format!("usage: {name} [ADDRESS]")),
            "{help}"
        );
        assert!(help.contains("HOST:PORT"), "{help}");
    }
}
