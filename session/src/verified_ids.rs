//! Client ids that verified lately, remembered per thread.
//!
//! Checking an id's HMAC and hashing it for the store were most of the CPU
//! of reading a session cookie. An id that verified under a format's key
//! ring always will (the ring of a format never changes), so each thread
//! remembers the ids it verified lately and answers them without the
//! cryptography.
//!
//! Only ids that verified are remembered, so a forged id never skips the
//! HMAC check. Lookups never compare a presented value with a remembered id
//! in variable time: entries are found by a keyed hash of the value (a
//! random key per format), and the one candidate is compared in constant
//! time, so timing tells nothing about the ids of other clients.

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt,
    hash::{BuildHasher, RandomState},
};

use subtle::ConstantTimeEq;
use thread_local::ThreadLocal;

use crate::ClientId;

/// Ids kept per thread; the thread's map is emptied when it is full.
const MAX_IDS_PER_THREAD: usize = 4096;

/// Recently verified ids of one format.
#[derive(Default)]
pub(crate) struct VerifiedIds {
    /// The key of the hash that files ids.
    hasher: RandomState,
    threads: ThreadLocal<Slot>,
}

/// One thread's ids. Padded: `ThreadLocal` keeps the values of threads side
/// by side, and the borrow flag is written on every lookup.
#[derive(Default)]
#[repr(align(128))]
struct Slot(RefCell<HashMap<u64, ClientId>>);

impl VerifiedIds {
    /// The remembered id whose wire form is `candidate`, if this thread
    /// verified it lately.
    pub(crate) fn get(&self, candidate: &str) -> Option<ClientId> {
        let slot = self.threads.get()?;
        let ids = slot.0.borrow();
        let id = ids.get(&self.hasher.hash_one(candidate))?;
        same_in_constant_time(id.as_str().as_bytes(), candidate.as_bytes()).then(|| id.clone())
    }

    /// Remember `id`, which just verified.
    pub(crate) fn remember(&self, id: &ClientId) {
        let mut ids = self.threads.get_or(Slot::default).0.borrow_mut();
        if ids.len() >= MAX_IDS_PER_THREAD {
            ids.clear();
        }
        ids.insert(self.hasher.hash_one(id.as_str()), id.clone());
    }
}

/// Whether `a` and `b` are equal, in time that depends only on their
/// lengths (which are public: every id of a format has the same length).
///
/// NOTE: eight bytes at a time, folded into one word that `subtle` compares
/// at the end: `subtle`'s byte slices compare a byte per optimisation
/// barrier, which was a third of answering a remembered id.
fn same_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_tail) = a.as_chunks::<8>();
    let (b_words, b_tail) = b.as_chunks::<8>();
    let mut difference = 0u64;
    for (x, y) in a_words.iter().zip(b_words) {
        difference |= u64::from_ne_bytes(*x) ^ u64::from_ne_bytes(*y);
    }
    for (x, y) in a_tail.iter().zip(b_tail) {
        difference |= u64::from(x ^ y);
    }
    difference.ct_eq(&0).into()
}

impl fmt::Debug for VerifiedIds {
    /// No ids: they are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifiedIds").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::same_in_constant_time;

    #[test]
    fn same_in_constant_time_finds_a_difference_in_any_byte() {
        for len in [0usize, 1, 7, 8, 9, 16, 67, 68, 69] {
            let a: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
            assert!(same_in_constant_time(&a, &a.clone()), "len {len}");
            for at in 0..len {
                for flip in [0x01u8, 0x80] {
                    let mut b = a.clone();
                    b[at] ^= flip;
                    assert!(!same_in_constant_time(&a, &b), "len {len}, byte {at}");
                }
            }
            let mut longer = a.clone();
            longer.push(0);
            assert!(!same_in_constant_time(&a, &longer), "len {len}");
            assert!(!same_in_constant_time(&longer, &a), "len {len}");
        }
    }
}
