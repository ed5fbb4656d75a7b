//! What the README tells a library user to write: a project of its own that depends on
//! coop by path, with `futures` for its `io` helpers, built and run. Its program reads
//! lines with `BufReader::lines` from a coop `TcpStream`.
#![cfg(not(miri))]

use std::process::Command;

/// The README's lines, as a user pastes them (the path made absolute here).
const MAIN: &str = r#"
use coop::net::{TcpListener, TcpStream};
use futures::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use futures::StreamExt;

fn main() -> std::io::Result<()> {
    coop::block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let writer = coop::spawn(async move {
            let mut client = TcpStream::connect(addr).await?;
            client.write_all(b"one\ntwo\n").await?;
            client.close().await
        });
        let (stream, _) = listener.accept().await?;
        let lines: Vec<String> = BufReader::new(stream).lines().map(|l| l.unwrap()).collect().await;
        writer.await??;
        assert_eq!(lines, ["one", "two"]);
        println!("{}", lines.join(","));
        Ok(())
    })
}
"#;

#[test]
fn a_project_of_its_own_builds_on_coop_by_path() {
    let coop = concat!(env!("CARGO_MANIFEST_DIR"));
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let project = std::env::temp_dir().join(format!("coop-dependent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&project);
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"dependent\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [dependencies]\ncoop = {{ path = \"{coop}\" }}\nfutures = \"0.3\"\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(project.join("src/main.rs"), MAIN).unwrap();
    // Its own target directory, kept between runs under the workspace's: the build is a
    // few seconds once coop and futures are compiled there.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["run", "--quiet", "--offline"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", format!("{root}/target/dependent"))
        .output()
        .expect("run cargo");
    let _ = std::fs::remove_dir_all(&project);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one,two\n");
}
