//! How evenly does Linux spread TCP connects over N accepting threads, each
//! with its own epoll instance?
//!
//! Two modes, each on a fresh port on 127.0.0.1 every round:
//! - `reuseport`: N listening sockets bound to one port with `SO_REUSEPORT`,
//!   one per thread, registered `EPOLLIN | EPOLLET`;
//! - `exclusive`: one shared listening socket registered in every thread's
//!   epoll with `EPOLLIN | EPOLLET | EPOLLEXCLUSIVE` (thread 0 first).
//!
//! Two client patterns: `sequential` (M connects one after the other from the
//! main thread) and `burst` (M connects as fast as possible from 4 threads).
//! Clients hold every connection until the round ends; acceptors accept until
//! `EAGAIN` on each wakeup, count, and close each accepted socket at once. A
//! round ends when all M are counted (an eventfd in every epoll wakes the
//! acceptors), or after 10 s, which is reported. Prints, per mode and pattern,
//! each round's per-thread counts and the median over rounds of max/mean.
//!
//! Run: `cargo run --release -p accept-balance -- [--threads N] [--connects M] [--rounds R]`
//! (defaults 2, 1000, 5), optionally under `taskset -c 0`.

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{EventfdFlags, PollFd, PollFlags, Timespec, eventfd};
use rustix::io::{Errno, write};
use rustix::net::{AddressFamily, SocketFlags, SocketType, accept_with, bind, getsockname};
use rustix::net::{listen, socket_with, sockopt::set_socket_reuseport};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::{io, mem::MaybeUninit, process::exit, thread, time::Duration};

const USAGE: &str = "usage: accept-balance [--threads N] [--connects M] [--rounds R]";
const STOP: u64 = u64::MAX;
const CLIENT_THREADS: usize = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn main() {
    let [threads, connects, rounds] = parse_args().unwrap_or_else(|e| {
        eprintln!("accept-balance: {e}\n{USAGE}");
        exit(2)
    });
    let Rlimit { maximum, .. } = getrlimit(Resource::Nofile);
    let raised = Rlimit {
        current: maximum,
        maximum,
    };
    setrlimit(Resource::Nofile, raised).unwrap_or_else(|e| eprintln!("RLIMIT_NOFILE: {e}"));
    println!(
        "threads {threads}, connects {connects}, rounds {rounds}; accepted sockets closed at once"
    );
    for (exclusive, mode) in [(false, "reuseport"), (true, "exclusive")] {
        for (burst, pattern) in [(false, "sequential"), (true, "burst")] {
            let mut line = format!("{mode:<9} {pattern:<10}");
            let mut ratios = Vec::new();
            for _ in 0..rounds {
                match round(exclusive, burst, threads, connects) {
                    Ok((counts, gave_up)) => {
                        let max = *counts.iter().max().unwrap_or(&0) as f64;
                        let mean = counts.iter().sum::<usize>() as f64 / threads as f64;
                        ratios.push(if mean > 0.0 { max / mean } else { f64::NAN });
                        line += &format!(
                            " {counts:?}{}",
                            if gave_up { "(gave up after 10 s)" } else { "" }
                        );
                    }
                    Err(e) => line += &format!(" [failed: {e}]"),
                }
            }
            ratios.sort_by(f64::total_cmp);
            let median = match ratios.len() {
                0 => f64::NAN,
                n if n % 2 == 1 => ratios[n / 2],
                n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
            };
            println!("{line}  max/mean median {median:.3}");
        }
    }
}

/// `--threads N --connects M --rounds R`, each a positive integer.
fn parse_args() -> Result<[usize; 3], String> {
    let mut values = [2, 1000, 5];
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--threads" => &mut values[0],
            "--connects" => &mut values[1],
            "--rounds" => &mut values[2],
            "-h" | "--help" => {
                println!("{USAGE}");
                exit(0)
            }
            _ => return Err(format!("unknown argument {flag:?}")),
        };
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        *slot = value.parse().ok().filter(|&n| n > 0).ok_or(format!(
            "{flag}: expected a positive integer, got {value:?}"
        ))?;
    }
    Ok(values)
}

/// One round: returns each thread's accept count, and whether it gave up.
fn round(exclusive: bool, burst: bool, threads: usize, m: usize) -> io::Result<(Vec<usize>, bool)> {
    let listeners = bind_listeners(if exclusive { 1 } else { threads })?;
    let port = SocketAddrV4::try_from(getsockname(&listeners[0])?)?.port();
    let stop = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
    let total = AtomicUsize::new(0);
    let mut epolls = Vec::new();
    for i in 0..threads {
        let (listener, flags) = match exclusive {
            false => (&listeners[i], EventFlags::IN | EventFlags::ET),
            true => (
                &listeners[0],
                EventFlags::IN | EventFlags::ET | EventFlags::EXCLUSIVE,
            ),
        };
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(&ep, listener, EventData::new_u64(0), flags)?;
        epoll::add(&ep, &stop, EventData::new_u64(STOP), EventFlags::IN)?;
        epolls.push((ep, listener.as_fd()));
    }
    let (stop_fd, total) = (stop.as_fd(), &total);
    thread::scope(|s| {
        let acceptors: Vec<_> = epolls
            .into_iter()
            .map(|(ep, l)| s.spawn(move || accept_loop(&ep, l, stop_fd, total, m)))
            .collect();
        thread::sleep(Duration::from_millis(20)); // let every acceptor reach epoll_wait
        let clients = connect_all(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), m, burst);
        let mut gave_up = false;
        if clients.is_ok() {
            let mut pfd = [PollFd::new(&stop, PollFlags::IN)];
            let give_up = Timespec {
                tv_sec: 10,
                tv_nsec: 0,
            };
            gave_up = rustix::event::poll(&mut pfd, Some(&give_up)) != Ok(1);
        }
        signal(stop_fd)?;
        let counts = acceptors
            .into_iter()
            .map(|a| a.join().expect("acceptor panicked"));
        let counts = counts.collect::<io::Result<Vec<usize>>>()?;
        drop(clients?); // held open until every acceptor is done
        Ok((counts, gave_up))
    })
}

fn bind_listeners(n: usize) -> io::Result<Vec<OwnedFd>> {
    let mut port = 0;
    let mut listeners = Vec::new();
    for _ in 0..n {
        let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
        let fd = socket_with(AddressFamily::INET, SocketType::STREAM, flags, None)?;
        if n > 1 {
            set_socket_reuseport(&fd, true)?;
        }
        bind(&fd, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
        listen(&fd, 4096)?;
        port = SocketAddrV4::try_from(getsockname(&fd)?)?.port();
        listeners.push(fd);
    }
    Ok(listeners)
}

fn signal(stop: BorrowedFd<'_>) -> io::Result<()> {
    write(stop, &1u64.to_ne_bytes())?;
    Ok(())
}

/// Waits on `ep`; on each wakeup accepts until `EAGAIN`; returns how many.
fn accept_loop(
    ep: &OwnedFd,
    listener: BorrowedFd<'_>,
    stop: BorrowedFd<'_>,
    total: &AtomicUsize,
    target: usize,
) -> io::Result<usize> {
    let mut events = [MaybeUninit::<epoll::Event>::uninit(); 8];
    let mut mine = 0;
    loop {
        let (ready, _) = match epoll::wait(ep, &mut events, None) {
            Err(Errno::INTR) => continue,
            result => result?,
        };
        for event in ready.iter() {
            let data = event.data; // `Event` is packed: copy before use
            if data.u64() == STOP {
                return Ok(mine);
            }
            loop {
                match accept_with(listener, SocketFlags::CLOEXEC) {
                    Ok(_closed_at_once) => mine += 1,
                    Err(Errno::AGAIN) => break,
                    Err(Errno::INTR | Errno::CONNABORTED) => continue,
                    Err(e) => return Err(e.into()),
                }
                if total.fetch_add(1, Ordering::AcqRel) + 1 == target {
                    signal(stop)?;
                }
            }
        }
    }
}

/// Makes `m` connects to `addr`, from this thread or from `CLIENT_THREADS` at once.
fn connect_all(addr: SocketAddr, m: usize, burst: bool) -> io::Result<Vec<TcpStream>> {
    let connect = |n: usize| {
        (0..n)
            .map(|_| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
            .collect()
    };
    if !burst {
        return connect(m);
    }
    thread::scope(|s| {
        let shares =
            (0..CLIENT_THREADS).map(|c| m / CLIENT_THREADS + usize::from(c < m % CLIENT_THREADS));
        let clients: Vec<_> = shares.map(|n| s.spawn(move || connect(n))).collect();
        let mut all = Vec::with_capacity(m);
        for c in clients {
            all.extend(c.join().expect("client thread panicked")?);
        }
        Ok(all)
    })
}
