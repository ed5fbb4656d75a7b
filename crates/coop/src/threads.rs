//! One runtime per thread: [`Builder`] starts the threads, [`Threads`] stops and joins
//! them.
//!
//! Each thread runs a [`Runtime`] of its own, as independent as two processes: its own
//! ready queue, OS poll and timers, and nothing shared on the message path. To spread
//! clients among them, give each its own listener on the same port
//! ([`bind_reuse_port`](crate::net::bind_reuse_port)): the kernel picks a thread for
//! each new connection.

use std::fmt;
use std::future::Future;
use std::io;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};

use crate::{Remote, Runtime};

/// Starts threads that each run one future on a runtime of their own.
///
/// # Examples
///
/// Two threads, each with its own runtime, stopped from outside:
///
/// ```
/// let threads = coop::threads::Builder::new()
///     .name("worker")
///     .spawn((0..2).map(|i| {
///         move || async move {
///             coop::stop_requested().await; // serve until asked to stop
///             i * 10
///         }
///     }))?;
/// threads.stop();
/// let outputs: Vec<usize> = threads.join().into_iter().map(Result::unwrap).collect();
/// assert_eq!(outputs, [0, 10]);
/// # std::io::Result::Ok(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    name: String,
    first: usize,
    pin: bool,
}

impl Default for Builder {
    fn default() -> Self {
        Builder::new()
    }
}

impl Builder {
    /// Threads named `coop-0`, `coop-1`, ..., not pinned.
    pub fn new() -> Builder {
        Builder {
            name: "coop".into(),
            first: 0,
            pin: false,
        }
    }

    /// Names the threads `{prefix}-0`, `{prefix}-1`, ... (as panic messages and `top -H`
    /// show them).
    pub fn name(mut self, prefix: &str) -> Builder {
        self.name = prefix.into();
        self
    }

    /// Numbers the threads from `first` (default 0), in their names and in the CPU each
    /// is pinned to: for a program whose own thread is number 0 and runs a runtime too.
    pub fn number_from(mut self, first: usize) -> Builder {
        self.first = first;
        self
    }

    /// Pins thread `i` to the `i`-th CPU this process may run on (counting round the
    /// list again if there are more threads than CPUs; see [`pin_to_cpu`]), so that its
    /// caches stay on one core.
    pub fn pin_to_cpus(mut self, pin: bool) -> Builder {
        self.pin = pin;
        self
    }

    /// Starts one thread per item of `factories`: each creates its runtime, calls its
    /// factory there, and runs the future it returns with [`Runtime::block_on`]. The
    /// future need not be `Send` (it is made on its thread); its output is what
    /// [`Threads::join`] gives back for that thread.
    ///
    /// Returns once every runtime exists. Fails if a thread, a runtime or a pinning
    /// cannot be had; the threads started by then are stopped and joined first (their
    /// factories are never called).
    pub fn spawn<I, M, F>(self, factories: I) -> io::Result<Threads<F::Output>>
    where
        I: IntoIterator<Item = M>,
        M: FnOnce() -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let cpus = if self.pin {
            allowed_cpus()?
        } else {
            Vec::new()
        };
        let mut started = Vec::new();
        for (index, make) in (self.first..).zip(factories) {
            let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
            match start(format!("{}-{index}", self.name), cpu, make) {
                Ok(thread) => started.push(thread),
                Err(e) => {
                    for thread in started {
                        let _ = thread.go.send(false);
                        let _ = thread.handle.join();
                    }
                    return Err(e);
                }
            }
        }
        let threads = started
            .into_iter()
            .map(|thread| {
                let _ = thread.go.send(true);
                (thread.remote, thread.handle)
            })
            .collect();
        Ok(Threads { threads })
    }
}

/// A thread whose runtime exists, waiting for the word to run its factory.
struct Started<T> {
    handle: JoinHandle<Option<T>>,
    remote: Remote,
    /// `true`: run; `false` (or dropped): return without calling the factory.
    go: mpsc::Sender<bool>,
}

fn start<M, F>(name: String, cpu: Option<usize>, make: M) -> io::Result<Started<F::Output>>
where
    M: FnOnce() -> F + Send + 'static,
    F: Future + 'static,
    F::Output: Send + 'static,
{
    let (told, told_rx) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let handle = thread::Builder::new().name(name).spawn(move || {
        let runtime = cpu.map_or(Ok(()), pin_to).and_then(|()| Runtime::new());
        let runtime = match runtime {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = told.send(Err(e));
                return None;
            }
        };
        let _ = told.send(Ok(runtime.remote()));
        if go_rx.recv() != Ok(true) {
            return None;
        }
        Some(runtime.block_on(async move { make().await }))
    })?;
    // The thread answers before anything else it does, unless it died (out of memory).
    let answer = told_rx.recv().unwrap_or_else(|_| {
        Err(io::Error::other(
            "the thread ended before its runtime started",
        ))
    });
    match answer {
        Ok(remote) => Ok(Started { handle, remote, go }),
        Err(e) => {
            let _ = handle.join();
            Err(e)
        }
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect();
    if cpus.is_empty() {
        return Err(io::Error::other("the process may run on no CPU"));
    }
    Ok(cpus)
}

/// Pins the calling thread to the `index`-th CPU this process may run on now (counting
/// round the list again past its end), as [`Builder::pin_to_cpus`] pins thread `index`.
/// For a program's own thread; call it after starting the others, which would inherit
/// its one CPU.
pub fn pin_to_cpu(index: usize) -> io::Result<()> {
    let cpus = allowed_cpus()?;
    pin_to(cpus[index % cpus.len()])
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) -> io::Result<()> {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// Threads started by [`Builder::spawn`], each running its runtime.
///
/// Dropping it detaches the threads (as dropping a [`std::thread::JoinHandle`] does):
/// they run on until their futures complete.
pub struct Threads<T> {
    threads: Vec<(Remote, JoinHandle<Option<T>>)>,
}

impl<T> Threads<T> {
    /// How many threads there are.
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// Whether there are none (the builder was given no factory).
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// The [`Remote`] of thread `index`'s runtime, to start a task there or to ask it to
    /// stop. `None` past the last thread.
    pub fn remote(&self, index: usize) -> Option<&Remote> {
        self.threads.get(index).map(|(remote, _)| remote)
    }

    /// Asks every thread's runtime to stop ([`Remote::stop`]): the tasks waiting in
    /// [`stop_requested`](crate::stop_requested) go on.
    pub fn stop(&self) {
        for (remote, _) in &self.threads {
            remote.stop();
        }
    }

    /// Waits for every thread to finish and gives each one's output, in the order of the
    /// factories: `Err` holds the panic of a thread whose future panicked, as
    /// [`std::thread::JoinHandle::join`] gives it.
    pub fn join(self) -> Vec<thread::Result<T>> {
        self.threads
            .into_iter()
            .map(|(_, handle)| {
                // `None` is only for a thread told not to run, and those are not here.
                handle.join().map(|output| {
                    output.unwrap_or_else(|| unreachable!("every thread here was told to run"))
                })
            })
            .collect()
    }
}

impl<T> fmt::Debug for Threads<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Threads")
            .field("len", &self.threads.len())
            .finish_non_exhaustive()
    }
}
