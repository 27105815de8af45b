//! The key ring of a running `keel serve`, and its reload: every
//! [`DEFAULT_RELOAD_INTERVAL`] (`--key-reload-interval`) the server reads
//! the stored ring again and, if it changed, signs and verifies with the new
//! one from the next request on, without a restart. The admin API's key
//! routes reload at once after they stored a new ring.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use keel_session::{KeyRing, SharedKeyRing};

use super::source::RingSource;
use crate::CliError;

/// How often a server reads its stored key ring again by default: the bound
/// on how long after `keel keys rotate|retire` every server sharing the
/// database (or file) uses the new ring.
pub(crate) const DEFAULT_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// A server's key ring: where it is stored, and the ring its id format
/// signs with.
#[derive(Debug)]
pub(crate) struct ServerKeys {
    source: RingSource,
    shared: SharedKeyRing,
    /// The encoding of the ring in use: a stored ring that differs is new.
    applied: Mutex<Vec<u8>>,
    /// Time between reloads; `None`: only the admin API's changes apply.
    interval: Option<Duration>,
}

/// What a reload found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reloaded {
    /// The stored ring is the one in use.
    Unchanged,
    /// A new ring is in use; `retired`: it lacks a key of the old one, so
    /// ids signed only with that key no longer verify.
    Replaced { retired: bool },
}

impl ServerKeys {
    /// The keys of a server that starts with `ring`, stored in `source`,
    /// reloaded every `interval` (never for `None`).
    pub(crate) fn new(source: RingSource, ring: KeyRing, interval: Option<Duration>) -> Self {
        ServerKeys {
            source,
            applied: Mutex::new(ring.to_bytes()),
            shared: SharedKeyRing::new(ring),
            interval,
        }
    }

    /// The ring the server's id format signs with.
    pub(crate) fn shared(&self) -> SharedKeyRing {
        self.shared.clone()
    }

    /// Where the ring is stored.
    pub(crate) fn source(&self) -> &RingSource {
        &self.source
    }

    /// Read the stored ring and use it if it changed. Blocking (it reads the
    /// store or the file).
    ///
    /// # Errors
    /// The source's errors; [`CliError::NotFound`] if no ring is stored any
    /// more; [`CliError::Session`] if what is stored is not a key ring. The
    /// ring in use is then kept.
    pub(crate) fn reload(&self) -> Result<Reloaded, CliError> {
        let bytes = self.source.load_bytes()?.ok_or_else(|| {
            CliError::NotFound(format!(
                "the key ring is gone from {}",
                self.source.describe()
            ))
        })?;
        let mut applied = self.applied.lock().unwrap_or_else(PoisonError::into_inner);
        if *applied == bytes {
            return Ok(Reloaded::Unchanged);
        }
        let ring = KeyRing::from_bytes(&bytes)?;
        let ids: Vec<u16> = ring.key_ids().collect();
        let signing = ring.current_key_id();
        let retired = self.shared.replace(ring);
        *applied = bytes;
        if retired {
            tracing::warn!(
                keys = ?ids,
                signing,
                "key ring reloaded with keys retired: cookies signed only with a retired key \
                 no longer verify"
            );
        } else {
            tracing::info!(keys = ?ids, signing, "key ring reloaded");
        }
        Ok(Reloaded::Replaced { retired })
    }
}

/// Start the periodic reload of `keys` (nothing without an interval): every
/// interval, [`ServerKeys::reload`] on tokio's blocking pool; a failure is
/// logged and the ring in use kept until a later reload succeeds.
pub(crate) fn spawn(keys: Arc<ServerKeys>) -> Option<tokio::task::JoinHandle<()>> {
    let interval = keys.interval?;
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the ring was just loaded.
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let job = Arc::clone(&keys);
            match tokio::task::spawn_blocking(move || job.reload()).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "reloading the key ring failed; keeping the ring in use");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "reloading the key ring failed; keeping the ring in use");
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use keel_session::{IdFormat, KeelIdFormat};

    use super::*;

    #[test]
    fn a_reload_takes_up_a_stored_change_and_forgets_retired_ids() {
        let dir = tempfile::tempdir().unwrap();
        let source = RingSource::File(dir.path().join("ring"));
        let mut ring = KeyRing::generate().unwrap();
        source.store(&ring).unwrap();
        let keys = ServerKeys::new(source.clone(), ring.clone(), None);
        let format = KeelIdFormat::new(keys.shared());
        let old = format.mint().unwrap();
        assert!(format.parse(old.as_str()).is_some());
        assert_eq!(keys.reload().unwrap(), Reloaded::Unchanged);

        let newest = ring.rotate().unwrap();
        source.store(&ring).unwrap();
        assert_eq!(
            keys.reload().unwrap(),
            Reloaded::Replaced { retired: false }
        );
        assert_eq!(format.key_ring().current_key_id(), newest);
        assert!(format.parse(old.as_str()).is_some());

        ring.retain_newest(1);
        source.store(&ring).unwrap();
        assert_eq!(keys.reload().unwrap(), Reloaded::Replaced { retired: true });
        assert!(format.parse(old.as_str()).is_none());
    }

    #[test]
    fn a_broken_or_missing_stored_ring_keeps_the_ring_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let source = RingSource::File(path.clone());
        let ring = KeyRing::generate().unwrap();
        let keys = ServerKeys::new(source, ring.clone(), None);
        assert!(matches!(keys.reload(), Err(CliError::NotFound(_))));
        std::fs::write(&path, b"not a ring").unwrap();
        assert!(matches!(keys.reload(), Err(CliError::Session(_))));
        assert_eq!(keys.shared().load().to_bytes(), ring.to_bytes());
    }
}
