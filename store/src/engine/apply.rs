//! A transaction's change set, and the one place where it is validated
//! against current versions and applied (for RAM and redb alike).

use std::collections::BTreeSet;

use crate::{
    ClientKey, ExpiryPolicy, StoreError, SweepReport,
    engine::{
        records::{ItemKey, RecordKey, SessionRecord},
        view::{ReadView, Taken, WriteView},
    },
};

/// Everything a transaction commits: the versions it read (to validate) and
/// its writes. `V` is a value as the container stores it.
#[derive(Debug)]
pub(crate) struct ChangeSet<V> {
    /// Versions to check at commit, sorted by key; empty if nothing needs
    /// checking.
    pub(crate) reads: Vec<(RecordKey, u64)>,
    /// Session-level changes, at most one per session.
    pub(crate) sessions: Vec<SessionChange>,
    /// Value writes (`None` removes).
    pub(crate) items: Vec<(ItemKey, Option<V>)>,
}

impl<V> Default for ChangeSet<V> {
    fn default() -> Self {
        ChangeSet {
            reads: Vec::new(),
            sessions: Vec::new(),
            items: Vec::new(),
        }
    }
}

impl<V> ChangeSet<V> {
    /// Whether it writes anything (touches included).
    pub(crate) fn has_writes(&self) -> bool {
        !self.sessions.is_empty() || !self.items.is_empty()
    }

    /// Whether there is nothing to validate and nothing to write.
    pub(crate) fn is_empty(&self) -> bool {
        self.reads.is_empty() && !self.has_writes()
    }
}

/// What happens to one session record.
#[derive(Debug, Clone)]
pub(crate) struct SessionChange {
    pub(crate) client: ClientKey,
    /// Delete all stored data of the session first (delete, re-create over an
    /// expired session, rename).
    pub(crate) wipe: bool,
    pub(crate) record: RecordChange,
    /// A last-access time to merge by maximum; dropped if the session no
    /// longer exists.
    pub(crate) touch: Option<u64>,
}

/// A change of a session record's generation (bumps its version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordChange {
    /// Unchanged (only a touch, or only a wipe).
    Keep,
    /// Written (created, renamed to, or principal changed).
    Put {
        created: u64,
        last_access: u64,
        principal: Option<String>,
    },
    /// Deleted.
    Delete,
}

/// Check every version `changes` read against the current one.
///
/// # Errors
/// [`StoreError::Conflict`] naming the first record that changed; storage
/// errors of the view.
pub(crate) fn validate<V>(
    view: &mut impl ReadView,
    changes: &ChangeSet<V>,
) -> Result<(), StoreError> {
    for (key, read) in &changes.reads {
        if view.version(key)? != *read {
            return Err(StoreError::Conflict {
                client: *key.client(),
                what: key.describe(),
            });
        }
    }
    Ok(())
}

/// Apply `changes`, validated by [`validate`] against the same `view`, as
/// commit `tid`.
///
/// Order matters: wipes and record changes first, then values (which bump
/// the name-set and package-set versions blindly when a name appears or
/// disappears), then touches (maximum, never a version bump).
///
/// # Errors
/// Storage errors of the view; the caller must then discard everything
/// written in this commit.
pub(crate) fn apply<W: WriteView>(
    view: &mut W,
    changes: &ChangeSet<W::Stored>,
    tid: u64,
) -> Result<(), StoreError> {
    for change in &changes.sessions {
        // A session validated as absent just now needs no second lookup (the
        // common first request: create and insert).
        let session_key = RecordKey::Session(change.client);
        let validated_absent = changes
            .reads
            .binary_search_by(|(key, _)| key.cmp(&session_key))
            .is_ok_and(|at| changes.reads[at].1 == 0);
        let old = if validated_absent {
            None
        } else {
            view.session(&change.client)?
        };
        if change.wipe {
            view.wipe(&change.client)?;
        }
        match &change.record {
            RecordChange::Keep => {}
            RecordChange::Put {
                created,
                last_access,
                principal,
            } => {
                // Last-access times only grow: a touch committed since this
                // transaction read the record is kept (same generation only;
                // a wiped record belonged to an earlier session).
                let kept = old
                    .as_ref()
                    .filter(|_| !change.wipe)
                    .map_or(0, |o| o.last_access);
                let new = SessionRecord {
                    version: tid,
                    created: *created,
                    last_access: (*last_access).max(kept),
                    principal: principal.clone(),
                };
                view.put_session(&change.client, old.as_ref(), &new)?;
            }
            RecordChange::Delete => {
                if let Some(old) = &old {
                    view.delete_session(&change.client, old)?;
                }
            }
        }
    }
    let mut changed_names: BTreeSet<(&ClientKey, &str)> = BTreeSet::new();
    for (key, value) in &changes.items {
        let name_set_changed = match value {
            Some(value) => !view.put_item(key, tid, value)?,
            None => view.remove_item(key)?,
        };
        if name_set_changed {
            changed_names.insert((&key.client, &key.package));
        }
    }
    let mut changed_packages: BTreeSet<&ClientKey> = BTreeSet::new();
    for (client, package) in changed_names {
        view.set_names_version(client, package, tid)?;
        changed_packages.insert(client);
    }
    for client in changed_packages {
        view.set_packages_version(client, tid)?;
    }
    for change in &changes.sessions {
        let Some(touch) = change.touch else { continue };
        if let Some(old) = view.session(&change.client)?
            && touch > old.last_access
        {
            let new = SessionRecord {
                last_access: touch,
                ..old.clone()
            };
            view.put_session(&change.client, Some(&old), &new)?;
        }
    }
    Ok(())
}

/// Delete the sessions `clients` and all their data (admin); returns how many
/// existed. Deleting changes the session's version, so a transaction in
/// flight that read one of them conflicts instead of resurrecting it. A
/// session record that does not decode is deleted too (and counted).
///
/// # Errors
/// Storage errors of the view.
pub(crate) fn delete_sessions<W: WriteView>(
    view: &mut W,
    clients: &[ClientKey],
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for client in clients {
        match view.take_session(client)? {
            Taken::Absent => {}
            Taken::Record(_) | Taken::Damaged => {
                view.wipe(client)?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}

/// Delete up to `batch` sessions that have expired at `now`, reading only
/// expired index entries. A session whose record does not decode, met
/// through an expired index entry, is deleted with its data as well (not
/// counted as removed: whether it had expired cannot be told), so that
/// damage neither fails the sweep's commit nor stays behind forever.
///
/// # Errors
/// Storage errors of the view.
pub(crate) fn sweep<W: WriteView>(
    view: &mut W,
    policy: &ExpiryPolicy,
    now: u64,
    batch: usize,
) -> Result<SweepReport, StoreError> {
    let candidates = view.expired(
        policy.idle_cutoff(now),
        policy.age_cutoff(now),
        batch.saturating_add(1),
    )?;
    let more = candidates.len() > batch;
    let mut removed = 0;
    for client in candidates.into_iter().take(batch) {
        match view.take_session(&client)? {
            Taken::Absent => {}
            // The indexes are exact, so every candidate has expired; the
            // check guards against a damaged index all the same.
            Taken::Record(old) => {
                if policy.is_expired(old.created, old.last_access, now) {
                    view.wipe(&client)?;
                    removed += 1;
                } else {
                    view.put_session(&client, None, &old)?;
                }
            }
            Taken::Damaged => view.wipe(&client)?,
        }
    }
    Ok(SweepReport { removed, more })
}
