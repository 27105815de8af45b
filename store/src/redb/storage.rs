//! Storage backends the redb container wraps around the one it is given: a
//! boxed backend from [`RedbOptions::with_storage_backend`], and a
//! copy-on-write overlay that lets the open check a file that needs a repair
//! without writing to it.
//!
//! [`RedbOptions::with_storage_backend`]: crate::RedbOptions::with_storage_backend

use std::{collections::HashMap, fmt, io, ops::Bound};

use parking_lot::Mutex;
use redb::{BackendError, StorageBackend};

/// A boxed backend, usable where redb wants `impl StorageBackend`.
#[derive(Debug)]
pub(crate) struct BoxedBackend(pub(crate) Box<dyn StorageBackend>);

impl StorageBackend for BoxedBackend {
    fn len(&self) -> Result<u64, io::Error> {
        self.0.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        self.0.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        self.0.set_len(len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.0.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.0.write(offset, data)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.0.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.query_lock_range(start, end)
    }
}

const BLOCK: u64 = 4096;

/// Reads from a base backend, keeps every write in memory: redb can repair
/// (and so read) a file that was not closed cleanly while the file itself is
/// never written. Used to look inside a file before deciding to open it, and
/// to open one read-only. Its locks are shared locks on the base.
pub(crate) struct Overlay {
    base: Box<dyn StorageBackend>,
    state: Mutex<OverlayState>,
}

struct OverlayState {
    len: u64,
    /// Bytes of the base at or beyond this offset read as zero (the storage
    /// was shrunk, then grown again).
    base_visible: u64,
    blocks: HashMap<u64, Vec<u8>>,
}

impl fmt::Debug for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Overlay")
            .field("base", &self.base)
            .field("len", &state.len)
            .field("dirty_blocks", &state.blocks.len())
            .finish()
    }
}

impl Overlay {
    pub(crate) fn new(base: Box<dyn StorageBackend>) -> io::Result<Self> {
        let len = base.len()?;
        Ok(Overlay {
            base,
            state: Mutex::new(OverlayState {
                len,
                base_visible: len,
                blocks: HashMap::new(),
            }),
        })
    }

    /// Block `index` as the base shows it.
    fn base_block(&self, state: &OverlayState, index: u64) -> io::Result<Vec<u8>> {
        let mut block = vec![0u8; BLOCK as usize];
        let start = index * BLOCK;
        let end = (start + BLOCK).min(state.base_visible);
        if end > start {
            let len = usize::try_from(end - start).map_err(io::Error::other)?;
            self.base.read(start, &mut block[..len])?;
        }
        Ok(block)
    }
}

fn span(offset: u64, len: usize) -> io::Result<(u64, u64)> {
    let end = offset
        .checked_add(len as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "offset overflows"))?;
    Ok((offset, end))
}

impl StorageBackend for Overlay {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state.lock().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let state = self.state.lock();
        let (start, end) = span(offset, out.len())?;
        if end > state.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read beyond the end of the storage",
            ));
        }
        let mut at = start;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let take = ((BLOCK as usize) - within).min((end - at) as usize);
            let out_at = (at - start) as usize;
            let target = &mut out[out_at..out_at + take];
            match state.blocks.get(&index) {
                Some(block) => target.copy_from_slice(&block[within..within + take]),
                None => {
                    let block = self.base_block(&state, index)?;
                    target.copy_from_slice(&block[within..within + take]);
                }
            }
            at += take as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut state = self.state.lock();
        if len < state.len {
            state.blocks.retain(|index, _| index * BLOCK < len);
            let tail = len % BLOCK;
            if tail != 0
                && let Some(block) = state.blocks.get_mut(&(len / BLOCK))
            {
                block[tail as usize..].fill(0);
            }
            state.base_visible = state.base_visible.min(len);
        }
        state.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut state = self.state.lock();
        let (start, end) = span(offset, data.len())?;
        let mut at = start;
        while at < end {
            let index = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let take = ((BLOCK as usize) - within).min((end - at) as usize);
            if !state.blocks.contains_key(&index) {
                let block = self.base_block(&state, index)?;
                state.blocks.insert(index, block);
            }
            if let Some(block) = state.blocks.get_mut(&index) {
                let data_at = (at - start) as usize;
                block[within..within + take].copy_from_slice(&data[data_at..data_at + take]);
            }
            at += take as u64;
        }
        state.len = state.len.max(end);
        Ok(())
    }

    // NOTE: the overlay never writes its base, so every lock is taken
    // shared on the base: an exclusive lock asked for by the redb writer
    // that repairs the overlay would fail on a file opened read-only, and
    // must not stop other readers. A real writer (`keel serve`) is still
    // excluded, and excludes the overlay.

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.base.try_lock_shared_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.base.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.base.lock_shared_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.base.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.base.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.base.query_lock_range(start, end)
    }

    fn close(&self) -> Result<(), io::Error> {
        self.base.close()
    }
}

#[cfg(test)]
mod tests {
    use redb::backends::InMemoryBackend;

    use super::*;

    fn base_with(bytes: &[u8]) -> Box<dyn StorageBackend> {
        let base = InMemoryBackend::new();
        base.set_len(bytes.len() as u64).unwrap();
        base.write(0, bytes).unwrap();
        Box::new(base)
    }

    #[test]
    fn the_overlay_reads_its_writes_and_never_writes_the_base() {
        let original: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let overlay = Overlay::new(base_with(&original)).unwrap();
        overlay.write(4090, &[7; 20]).unwrap();
        let mut out = vec![0; 30];
        overlay.read(4080, &mut out).unwrap();
        assert_eq!(&out[..10], &original[4080..4090]);
        assert_eq!(&out[10..30], &[7; 20]);
        let mut base_bytes = vec![0; 10_000];
        overlay.base.read(0, &mut base_bytes).unwrap();
        assert_eq!(base_bytes, original);
    }

    #[test]
    fn shrinking_then_growing_reads_zeros() {
        let overlay = Overlay::new(base_with(&[9; 8192])).unwrap();
        overlay.set_len(100).unwrap();
        overlay.set_len(8192).unwrap();
        let mut out = vec![1; 200];
        overlay.read(0, &mut out).unwrap();
        assert_eq!(&out[..100], &[9; 100]);
        assert!(out[100..].iter().all(|b| *b == 0));
        assert!(overlay.read(8000, &mut [0; 500]).is_err());
    }
}
