//! Looks for what some end-to-end tests need besides the program (`nc`, `tmux`,
//! `prlimit`, `haproxy`, `openssl`, `chromedriver`, `python2.7`, an IPv6 loopback address, root and `ip` for network namespaces), so that a test that cannot run on this machine
//! shows as `ignored, needs ...` in `cargo test` instead of passing without having run:
//! the test harness has no way to skip at run time. Under `CI=true` nothing is marked:
//! the tests run, and one whose tool is missing fails.

use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rerun-if-env-changed=CI");
    println!("cargo::rerun-if-env-changed=PATH");
    let path: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    // A tool installed later changes its directory: look again then.
    for dir in path.iter().filter(|dir| dir.is_dir()) {
        println!("cargo::rerun-if-changed={}", dir.display());
    }
    let ci = env::var("CI").as_deref() == Ok("true");
    for (tool, cfg) in [
        ("nc", "missing_nc"),
        ("tmux", "missing_tmux"),
        ("prlimit", "missing_prlimit"),
        ("haproxy", "missing_haproxy"),
        ("openssl", "missing_openssl"),
        ("chromedriver", "missing_chromedriver"),
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
        if !ci && !path.iter().any(|dir| is_executable(&dir.join(tool))) {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
    // Test hosts in network namespaces need `ip` and root.
    println!("cargo::rustc-check-cfg=cfg(missing_netns)");
    let root = std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    });
    let ip = path.iter().any(|dir| is_executable(&dir.join("ip")));
    if !(ci || (root && ip)) {
        println!("cargo::rustc-cfg=missing_netns");
    }
    // The Autobahn WebSocket suite is Python 2 code (a pyenv 2.7 answers as python2.7).
    println!("cargo::rustc-check-cfg=cfg(missing_python2)");
    if !ci && !path.iter().any(|dir| is_executable(&dir.join("python2.7"))) {
        println!("cargo::rustc-cfg=missing_python2");
    }
    println!("cargo::rustc-check-cfg=cfg(missing_ipv6_loopback)");
    if !ci && std::net::TcpListener::bind("[::1]:0").is_err() {
        println!("cargo::rustc-cfg=missing_ipv6_loopback");
    }
}

fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    file.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
