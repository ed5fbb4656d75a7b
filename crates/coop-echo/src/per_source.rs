//! `--max-connections-per-source N`: at most N connections open at once from one client
//! address, so that one client cannot hold every place under `--max-connections` (ten
//! that each send a byte every two seconds kept ten places for as long as they liked).
//!
//! One table for every serving thread: the kernel spreads one address's connections
//! over the threads' listeners by a hash of each connection's ports, so a share of N
//! per thread would refuse a client whose few connections happen to land together, and
//! let N × threads through when they spread. The table is touched twice per connection
//! (its place taken, and given back), under a lock held for one hash map operation; it
//! holds an entry only for an address with a connection open (removed at zero), so no
//! more than the connections open.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// The connections open from each client address, across threads, and the limit.
/// Cloning it gives another handle to the same table.
#[derive(Debug, Clone)]
pub struct PerSource {
    inner: Arc<Table>,
}

#[derive(Debug)]
struct Table {
    max: u32,
    open: Mutex<HashMap<IpAddr, u32>>,
}

impl PerSource {
    /// At most `max` connections at once from one address (at least 1).
    pub fn new(max: u32) -> PerSource {
        PerSource {
            inner: Arc::new(Table {
                max: max.max(1),
                open: Mutex::default(),
            }),
        }
    }

    /// The limit.
    pub fn max(&self) -> u32 {
        self.inner.max
    }

    /// Takes a place for a connection from `source`: `false` if it has `max` open
    /// already. A place taken is given back with [`give_back`](Self::give_back).
    pub fn take(&self, source: IpAddr) -> bool {
        let mut open = self.lock();
        let max = self.inner.max;
        match open.entry(source) {
            Entry::Occupied(mut entry) => {
                let n = entry.get_mut();
                if *n >= max {
                    return false;
                }
                *n += 1;
            }
            Entry::Vacant(entry) => {
                entry.insert(1);
            }
        }
        true
    }

    /// Gives back a place [`take`](Self::take) gave `source`.
    pub fn give_back(&self, source: IpAddr) {
        let mut open = self.lock();
        if let Entry::Occupied(mut entry) = open.entry(source) {
            let n = entry.get_mut();
            *n = n.saturating_sub(1);
            if *n == 0 {
                entry.remove();
            }
        }
    }

    /// Addresses with a connection open now.
    pub fn sources(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        // Nothing panics while the lock is held (a hash map operation on plain values):
        // a poisoned lock still holds good counts.
        self.inner
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_its_share_and_entries_go_at_zero() {
        let table = PerSource::new(3);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::1".parse().unwrap();
        assert_eq!((0..10).filter(|_| table.take(a)).count(), 3);
        assert!(table.take(b), "another address has its own share");
        assert_eq!(table.sources(), 2);
        table.give_back(a);
        assert!(table.take(a), "a place given back is taken again");
        assert!(!table.take(a));
        for _ in 0..3 {
            table.give_back(a);
        }
        table.give_back(b);
        assert_eq!(table.sources(), 0, "no entry is left at zero");
    }

    #[test]
    fn the_table_holds_only_addresses_with_a_connection_open() {
        let table = PerSource::new(1);
        for i in 0..100_000u32 {
            let source = IpAddr::from(i.to_be_bytes());
            assert!(table.take(source));
            table.give_back(source);
        }
        assert_eq!(table.sources(), 0);
        // Shared by its clones, as by the threads.
        let other = table.clone();
        let source: IpAddr = "192.0.2.7".parse().unwrap();
        assert!(table.take(source));
        assert!(!other.take(source));
    }
}
