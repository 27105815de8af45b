//! Where a key ring is kept: the `keel.key_ring` setting of a session
//! database, or a file (`--secret-file`). Both `keel keys` and the servers'
//! reload read and write it here.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use keel_session::KeyRing;
use keel_store::SessionContainer;

use crate::CliError;

/// The setting under which the keel-format key ring is stored in the
/// database.
pub(crate) const KEY_RING_SETTING: &str = keel_session::KEY_RING_SETTING;

/// Where a key ring is kept.
#[derive(Clone)]
pub(crate) enum RingSource {
    /// The `keel.key_ring` setting of a database, named (for messages) by
    /// `name`.
    Setting {
        container: Arc<dyn SessionContainer>,
        name: String,
    },
    /// A key ring file (`--secret-file`).
    File(PathBuf),
}

impl fmt::Debug for RingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl RingSource {
    /// What the source is, for messages: `the database NAME` or `FILE`.
    pub(crate) fn describe(&self) -> String {
        match self {
            RingSource::Setting { name, .. } => format!("the database {name}"),
            RingSource::File(path) => path.display().to_string(),
        }
    }

    /// The stored encoding, if a ring is stored.
    ///
    /// # Errors
    /// The store's errors; [`CliError::ReadFile`] for an unreadable file.
    pub(crate) fn load_bytes(&self) -> Result<Option<Vec<u8>>, CliError> {
        match self {
            RingSource::Setting { container, .. } => Ok(container.load_setting(KEY_RING_SETTING)?),
            RingSource::File(path) => match std::fs::read(path) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(source) => Err(CliError::ReadFile {
                    path: path.clone(),
                    source,
                }),
            },
        }
    }

    /// The stored ring.
    ///
    /// # Errors
    /// [`CliError::NotFound`] if none is stored; [`CliError::Session`] if
    /// what is stored is not a key ring; as [`load_bytes`](Self::load_bytes).
    pub(crate) fn load(&self) -> Result<KeyRing, CliError> {
        let bytes = self.load_bytes()?.ok_or_else(|| {
            CliError::NotFound(format!(
                "no key ring in {}: `keel serve` (with keel ids, the default) creates it on \
                 its first start",
                self.describe()
            ))
        })?;
        Ok(KeyRing::from_bytes(&bytes)?)
    }

    /// Store `ring`, replacing the stored one. A file is replaced
    /// atomically (a new file, readable by its owner only, renamed over
    /// it).
    ///
    /// # Errors
    /// The store's errors; [`CliError::WriteFile`] if the file cannot be
    /// written.
    pub(crate) fn store(&self, ring: &KeyRing) -> Result<(), CliError> {
        match self {
            RingSource::Setting { container, .. } => {
                Ok(container.store_setting(KEY_RING_SETTING, &ring.to_bytes())?)
            }
            RingSource::File(path) => {
                replace_file(path, &ring.to_bytes()).map_err(|source| CliError::WriteFile {
                    path: path.clone(),
                    source,
                })
            }
        }
    }
}

/// Replace `path` with a file holding `bytes`, readable by its owner only:
/// written next to it, synced, then renamed over it, so a reader sees the
/// old ring or the new one, never a part.
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".keel-new");
    let temporary = path.with_file_name(name);
    let _ = std::fs::remove_file(&temporary);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&temporary, path)) {
        Ok(()) => Ok(()),
        Err(err) => {
            let _ = std::fs::remove_file(&temporary);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let source = RingSource::File(path.clone());
        assert!(source.load_bytes().unwrap().is_none());
        assert!(matches!(source.load(), Err(CliError::NotFound(_))));
        let mut ring = KeyRing::generate().unwrap();
        source.store(&ring).unwrap();
        ring.rotate().unwrap();
        source.store(&ring).unwrap();
        assert_eq!(source.load().unwrap().to_bytes(), ring.to_bytes());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
