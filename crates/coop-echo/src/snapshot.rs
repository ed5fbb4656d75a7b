//! One serving thread's figures, as a [`worker`](crate::worker) takes them and the
//! control sums and reports them (the stats line, the summary, `/metrics`): a module of
//! its own, so that what reads the figures need not know the thread that keeps them.

use crate::http;
use crate::refused;

/// One thread's figures, as the control sums and reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Snapshot {
    /// Connections open now.
    pub open: u64,
    /// Connections accepted so far.
    pub total: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Reads that returned data.
    pub messages: u64,
    /// UDP datagrams received.
    pub udp_in: u64,
    /// UDP datagrams answered.
    pub udp_out: u64,
    /// UDP datagrams left unanswered by the rate limit.
    pub udp_refused: u64,
    /// The runtime's tasks.
    pub tasks: u64,
    /// Tasks in the ready queue.
    pub ready: u64,
    /// Sockets with a task waiting to read.
    pub parked_read: u64,
    /// Sockets with a task waiting to write.
    pub parked_write: u64,
    /// Registered sockets.
    pub sockets: u64,
    /// Pending timers.
    pub timers: u64,
    /// The HTTP listener's requests, WebSockets and bytes.
    pub http: http::Snapshot,
    /// Clients turned away, by reason (each counted, whether its warning was logged in
    /// full or summed up).
    pub refused: refused::Counts,
}

impl Snapshot {
    /// The figures of every thread, added up.
    pub fn sum<'a>(snapshots: impl IntoIterator<Item = &'a Snapshot>) -> Snapshot {
        snapshots
            .into_iter()
            .fold(Snapshot::default(), |a, b| Snapshot {
                open: a.open + b.open,
                total: a.total + b.total,
                bytes_in: a.bytes_in + b.bytes_in,
                bytes_out: a.bytes_out + b.bytes_out,
                messages: a.messages + b.messages,
                udp_in: a.udp_in + b.udp_in,
                udp_out: a.udp_out + b.udp_out,
                udp_refused: a.udp_refused + b.udp_refused,
                tasks: a.tasks + b.tasks,
                ready: a.ready + b.ready,
                parked_read: a.parked_read + b.parked_read,
                parked_write: a.parked_write + b.parked_write,
                sockets: a.sockets + b.sockets,
                timers: a.timers + b.timers,
                http: a.http.plus(&b.http),
                refused: a.refused.plus(&b.refused),
            })
    }
}
