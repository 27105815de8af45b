//! Client ids that verified lately, remembered per thread.
//!
//! Checking an id's HMAC and hashing it for the store were most of the CPU
//! of reading a session cookie, and parsing the `Cookie` header most of the
//! rest. What a request presents decides its id: an id that verified under
//! a format's key ring verifies until a key leaves the ring, and a `Cookie`
//! header always parses to the same id. So each thread remembers, by what
//! was presented, the ids it verified lately, and answers them without the
//! parsing and the cryptography.
//!
//! Each entry is remembered under the format's epoch
//! ([`IdFormat::epoch`](crate::IdFormat::epoch)) read before it was verified;
//! a lookup under another epoch finds nothing, so when a key is retired
//! every id remembered until then is verified again, in full, on its next
//! request.
//!
//! Only presentations whose id verified are remembered, so a forged id never
//! skips the HMAC check. Lookups never compare a presented value with a
//! remembered one in variable time: entries are found by a randomly seeded
//! 64-bit hash of the value, and the one candidate is compared in constant
//! time. At most, timing could tell an attacker that some remembered value
//! shares a probe's hash; that narrows nothing down: a value has 128 bits of
//! secret, so some 2^64 values share each hash. The hash need not be a
//! cryptographic one, so it is `foldhash`, not SipHash (which was a third of
//! a lookup).

use std::{cell::RefCell, collections::HashMap, fmt, hash::BuildHasher};

use foldhash::fast::{FixedState, RandomState};

use subtle::ConstantTimeEq;
use thread_local::ThreadLocal;

use crate::ClientId;

/// Entries kept per thread; the thread's map is emptied when it is full.
const MAX_IDS_PER_THREAD: usize = 4096;

/// Presentations longer than this are not remembered (they are parsed each
/// time), which bounds the memory to about `MAX_IDS_PER_THREAD` times this
/// per thread.
pub(crate) const MAX_REMEMBERED_LEN: usize = 256;

/// Recently verified ids, by what the client presented: the id itself, or
/// the whole `Cookie` header that carried it.
#[derive(Default)]
pub(crate) struct VerifiedIds {
    /// The seed of the hash that files presentations.
    hasher: RandomState,
    threads: ThreadLocal<Slot>,
}

/// One thread's ids. Padded: `ThreadLocal` keeps the values of threads side
/// by side, and the borrow flag is written on every lookup.
#[derive(Default)]
#[repr(align(128))]
struct Slot(RefCell<Ids>);

/// The ids one thread remembers, all verified under epoch `epoch`.
#[derive(Default)]
struct Ids {
    epoch: u64,
    by_hash: HashMap<u64, Remembered, FixedState>,
}

struct Remembered {
    presented: Box<[u8]>,
    id: ClientId,
}

impl VerifiedIds {
    /// The id whose presentation was `presented`, if this thread verified
    /// it lately, under epoch `epoch`.
    pub(crate) fn get(&self, presented: &[u8], epoch: u64) -> Option<ClientId> {
        let slot = self.threads.get()?;
        // NOTE: the keys are already seeded hashes, so the map itself hashes
        // them with a fixed seed; a busy borrow (not in practice: nothing
        // here calls back) counts as not remembered.
        let ids = slot.0.try_borrow().ok()?;
        if ids.epoch != epoch {
            return None;
        }
        let entry = ids.by_hash.get(&self.hasher.hash_one(presented))?;
        same_in_constant_time(&entry.presented, presented).then(|| entry.id.clone())
    }

    /// Remember `id`, which just verified under epoch `epoch` (read before
    /// verifying), as the id `presented` gives; nothing if `presented` is
    /// longer than [`MAX_REMEMBERED_LEN`] or the thread already remembers
    /// under a later epoch. A later epoch forgets everything remembered
    /// under the earlier one.
    pub(crate) fn remember(&self, presented: &[u8], id: &ClientId, epoch: u64) {
        if presented.len() > MAX_REMEMBERED_LEN {
            return;
        }
        let Ok(mut ids) = self.threads.get_or(Slot::default).0.try_borrow_mut() else {
            return;
        };
        if epoch < ids.epoch {
            return;
        }
        if epoch > ids.epoch {
            ids.by_hash.clear();
            ids.epoch = epoch;
        }
        if ids.by_hash.len() >= MAX_IDS_PER_THREAD {
            ids.by_hash.clear();
        }
        ids.by_hash.insert(
            self.hasher.hash_one(presented),
            Remembered {
                presented: presented.into(),
                id: id.clone(),
            },
        );
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
