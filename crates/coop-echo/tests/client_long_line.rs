//! `coop-echo client` takes time in proportion to a line's length, not its square (it
//! looked for the line's end from the line's start again at every chunk of stdin: a
//! 50 MB line took 26 s of CPU).
//!
//! The only test in its binary: it reads the CPU time of the children this process has
//! waited for, which another test's children would add to.

mod common;

use common::Server;

/// CPU time (user and system) of the children this process has waited for, in clock
/// ticks: fields 16 and 17 of /proc/self/stat, counted after the command name, which may
/// hold spaces.
fn children_cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let (_, after_name) = stat
        .rsplit_once(')')
        .expect("the command name in parentheses");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // The field after the name is field 3.
    fields[13].parse::<u64>().expect("cutime") + fields[14].parse::<u64>().expect("cstime")
}

/// The client's CPU time, in clock ticks, to send one line of `len` bytes to `server`
/// and print its echo; the echo is checked.
fn cpu_for_one_line(server: &Server, len: usize) -> u64 {
    let mut line = vec![b'x'; len - 1];
    line.push(b'\n');
    let before = children_cpu_ticks();
    let out = common::run(&["client", &server.addr.to_string()], &line);
    let spent = children_cpu_ticks() - before;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == line, "the echo of {len} bytes differs");
    spent
}

#[test]
fn a_line_four_times_longer_costs_about_four_times_the_cpu() {
    // A plain echo: the reply is the line itself, whatever the chunks.
    let server = Server::start(&["--quiet", "--prefix", ""]);
    const MIB: usize = 1024 * 1024;
    // Several of each, for more clock ticks to divide.
    let short: u64 = (0..4).map(|_| cpu_for_one_line(&server, 4 * MIB)).sum();
    let long: u64 = (0..2).map(|_| cpu_for_one_line(&server, 16 * MIB)).sum();
    let ratio = (long as f64 / 2.0) / (short.max(1) as f64 / 4.0);
    eprintln!("client CPU in clock ticks: 4 MiB 4 times {short}, 16 MiB twice {long}: {ratio:.1}x");
    // Linear is 4 (less, with what each run costs whatever its line), quadratic 16.
    assert!(ratio < 8.0, "16 MiB cost {ratio:.1} times 4 MiB");
}
