//! A table of values addressed by keys that go stale when their value leaves.
//!
//! Tasks and sockets are both named by a [`Key`]: tasks in the ready queue, sockets in
//! the OS poll's tokens. A key outlives its value (a waker kept by some other future, an
//! event for a socket closed earlier in the same batch), so each slot carries a
//! generation that a removal bumps: an old key then finds nothing instead of finding the
//! slot's next occupant.

use std::num::NonZeroU64;

/// Names one value in a [`Slab`]: the slot's index and the generation it was given.
///
/// Generations start at 1, so a key is never 0: `Option<Key>` is as small as a key (a
/// socket keeps two, one per direction).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) struct Key(NonZeroU64);

impl Key {
    fn new(index: u32, generation: u32) -> Self {
        Key::from_bits(u64::from(generation) << 32 | u64::from(index))
    }

    /// `bits` as a key; 0, which no slab gives out, as one that finds nothing.
    const fn from_bits(bits: u64) -> Self {
        match NonZeroU64::new(bits) {
            Some(bits) => Key(bits),
            None => Key(NonZeroU64::MAX),
        }
    }

    fn index(self) -> usize {
        (self.0.get() & u64::from(u32::MAX)) as usize
    }

    fn generation(self) -> u32 {
        (self.0.get() >> 32) as u32
    }

    /// The key as an epoll event's payload. Lossless: coop only builds on 64-bit targets.
    pub(crate) fn to_token(self) -> usize {
        self.0.get() as usize
    }

    pub(crate) const fn from_token(token: usize) -> Self {
        Key::from_bits(token as u64)
    }
}

/// The generation a slot gets when its value leaves: never 0.
fn next_generation(generation: u32) -> u32 {
    generation.checked_add(1).unwrap_or(FIRST_GENERATION)
}

const FIRST_GENERATION: u32 = 1;

const _: () = assert!(
    usize::BITS >= 64,
    "coop keys fill a 64-bit usize; 32-bit targets are not supported"
);

enum Slot<T> {
    Occupied { generation: u32, value: T },
    Vacant { generation: u32, next_free: u32 },
}

/// Values in a `Vec`; vacant slots form a free list through their own storage.
pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    /// Head of the free list; `u32::MAX` when empty.
    free: u32,
    len: usize,
}

const NONE: u32 = u32::MAX;

/// The highest index a slot gets: the two above it (and so any key whose index is one of
/// them) stay free for tokens that are not keys (the inbox's, the alarm's, `block_on`'s).
const LAST_INDEX: u32 = u32::MAX - 2;

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab::new()
    }
}

impl<T> Slab<T> {
    pub(crate) const fn new() -> Self {
        Slab {
            slots: Vec::new(),
            free: NONE,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Stores the value `make` builds from its own key, and returns that key.
    pub(crate) fn insert_with(&mut self, make: impl FnOnce(Key) -> T) -> Key {
        let (index, generation) = match self.free {
            NONE => {
                let index = u32::try_from(self.slots.len())
                    .ok()
                    .filter(|&i| i <= LAST_INDEX)
                    .unwrap_or_else(|| panic!("coop: more than {LAST_INDEX} live entries"));
                self.slots.push(Slot::Vacant {
                    generation: FIRST_GENERATION,
                    next_free: NONE,
                });
                (index, FIRST_GENERATION)
            }
            index => match self.slots[index as usize] {
                Slot::Vacant {
                    generation,
                    next_free,
                } => {
                    self.free = next_free;
                    (index, generation)
                }
                Slot::Occupied { .. } => unreachable!("free list points at an occupied slot"),
            },
        };
        let key = Key::new(index, generation);
        self.slots[index as usize] = Slot::Occupied {
            generation,
            value: make(key),
        };
        self.len += 1;
        key
    }

    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        match self.slots.get(key.index()) {
            Some(Slot::Occupied { generation, value }) if *generation == key.generation() => {
                Some(value)
            }
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        match self.slots.get_mut(key.index()) {
            Some(Slot::Occupied { generation, value }) if *generation == key.generation() => {
                Some(value)
            }
            _ => None,
        }
    }

    /// Takes the value out; `key` and every copy of it go stale.
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.index())?;
        match slot {
            Slot::Occupied { generation, .. } if *generation == key.generation() => {
                let vacant = Slot::Vacant {
                    generation: next_generation(*generation),
                    next_free: self.free,
                };
                let Slot::Occupied { value, .. } = std::mem::replace(slot, vacant) else {
                    unreachable!()
                };
                self.free = key.index() as u32;
                self.len -= 1;
                Some(value)
            }
            _ => None,
        }
    }

    /// Every value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.slots.iter().filter_map(|slot| match slot {
            Slot::Occupied { value, .. } => Some(value),
            Slot::Vacant { .. } => None,
        })
    }

    /// Empties the table, yielding every value (in no particular order).
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = T> + '_ {
        self.free = NONE;
        self.len = 0;
        self.slots.drain(..).filter_map(|slot| match slot {
            Slot::Occupied { value, .. } => Some(value),
            Slot::Vacant { .. } => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_never_zero_so_an_option_of_one_costs_nothing() {
        assert_eq!(size_of::<Option<Key>>(), size_of::<u64>());
        let mut slab = Slab::new();
        assert_ne!(
            slab.insert_with(|_| ()).to_token(),
            0,
            "the first slot's first key"
        );
        // A generation that wraps skips 0.
        assert_eq!(next_generation(u32::MAX), FIRST_GENERATION);
        assert_eq!(slab.get(Key::from_token(0)), None);
    }

    #[test]
    fn stale_keys_find_nothing() {
        let mut slab = Slab::new();
        let a = slab.insert_with(|_| "a");
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert_with(|_| "b");
        assert_eq!(a.index(), b.index(), "the slot is reused");
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(slab.len(), 1);
    }

    #[test]
    fn values_know_their_key_and_survive_the_token_round_trip() {
        let mut slab = Slab::new();
        let keys: Vec<Key> = (0..100).map(|_| slab.insert_with(|key| key)).collect();
        for &key in &keys[..50] {
            slab.remove(key);
        }
        for &key in &keys[50..] {
            assert_eq!(slab.get(Key::from_token(key.to_token())), Some(&key));
        }
        assert_eq!(slab.len(), 50);
        assert_eq!(slab.drain().count(), 50);
        assert_eq!(slab.len(), 0);
    }
}
