//! The admin operations on a container, answering in the `wire` types. Both
//! the offline `keel sessions` commands and the admin API call these, so
//! both modes give the same answers.
//!
//! Every function here blocks (redb is synchronous): async callers run them
//! with `tokio::task::spawn_blocking`.

use keel_store::{ClientKey, SessionAdmin, SessionContainer, StoreError};

use crate::{
    policy::PolicyJson,
    wire::{RevokedJson, SessionJson, StatsJson},
};

/// Up to `limit` sessions with keys after `after`, in key order; with their
/// data if `data`. A session deleted between the listing and the reading of
/// its data is left out.
///
/// # Errors
/// The container's read errors.
pub(crate) fn list_page(
    admin: &dyn SessionAdmin,
    after: Option<&ClientKey>,
    limit: usize,
    data: bool,
) -> Result<Vec<SessionJson>, StoreError> {
    let summaries = admin.list_sessions(after, limit)?;
    if !data {
        return Ok(summaries.iter().map(SessionJson::from).collect());
    }
    let mut sessions = Vec::with_capacity(summaries.len());
    for summary in &summaries {
        if let Some(detail) = admin.session_detail(&summary.key)? {
            sessions.push(SessionJson::from(&detail));
        }
    }
    Ok(sessions)
}

/// One session with its data, expired or not.
///
/// # Errors
/// The container's read errors.
pub(crate) fn show(
    admin: &dyn SessionAdmin,
    key: &ClientKey,
) -> Result<Option<SessionJson>, StoreError> {
    Ok(admin.session_detail(key)?.as_ref().map(SessionJson::from))
}

/// Delete one session; how many existed (0 or 1).
///
/// # Errors
/// The container's commit errors.
pub(crate) fn remove(admin: &dyn SessionAdmin, key: &ClientKey) -> Result<u64, StoreError> {
    admin.delete_sessions(std::slice::from_ref(key))
}

/// Delete every session of `principal` ("log out everywhere").
///
/// # Errors
/// [`StoreError::InvalidInput`] for a principal that cannot be stored; the
/// container's read and commit errors.
pub(crate) fn revoke_principal(
    admin: &dyn SessionAdmin,
    principal: &str,
) -> Result<RevokedJson, StoreError> {
    let keys = admin.sessions_of_principal(principal)?;
    let removed = if keys.is_empty() {
        0
    } else {
        admin.delete_sessions(&keys)?
    };
    Ok(RevokedJson {
        principal: principal.to_owned(),
        removed,
    })
}

/// Whole-container figures, judged with the container's expiry policy.
///
/// # Errors
/// The container's read errors.
pub(crate) fn stats(container: &dyn SessionContainer) -> Result<StatsJson, StoreError> {
    let stats = container.stats()?;
    Ok(StatsJson::new(
        stats,
        container.now(),
        PolicyJson::from(container.expiry()),
    ))
}

/// Parse an admin `key` (64 hex digits).
///
/// # Errors
/// [`StoreError::InvalidInput`] naming what was expected.
pub(crate) fn parse_key(key: &str) -> Result<ClientKey, StoreError> {
    key.parse()
}

#[cfg(test)]
mod tests {
    use keel_store::{RamContainer, SessionValue};
    use keel_txn::TransactionManager;

    use super::*;

    fn container_with(principals: &[Option<&str>]) -> (RamContainer, Vec<ClientKey>) {
        let container = RamContainer::new();
        let manager = TransactionManager::new();
        let mut keys = Vec::new();
        for (i, principal) in principals.iter().enumerate() {
            let key = ClientKey::from_client_id(&format!("client {i}"));
            let mut tx = manager.begin();
            container.create_session(&mut tx, &key).unwrap();
            container
                .insert(
                    &mut tx,
                    &key,
                    "keel.demo",
                    "count",
                    SessionValue::new(i as u64),
                )
                .unwrap();
            container.set_principal(&mut tx, &key, *principal).unwrap();
            tx.commit().unwrap();
            keys.push(key);
        }
        keys.sort();
        (container, keys)
    }

    #[test]
    fn pages_cover_every_session_once_in_key_order() {
        let (container, keys) = container_with(&[None; 5]);
        let first = list_page(&container, None, 2, false).unwrap();
        let after = parse_key(&first[1].key).unwrap();
        let rest = list_page(&container, Some(&after), 10, false).unwrap();
        let listed: Vec<String> = first.iter().chain(&rest).map(|s| s.key.clone()).collect();
        let expected: Vec<String> = keys.iter().map(ToString::to_string).collect();
        assert_eq!(listed, expected);
        assert!(first.iter().all(|s| s.data.is_none()));
    }

    #[test]
    fn listings_with_data_decode_values_to_json() {
        let (container, _) = container_with(&[None]);
        let page = list_page(&container, None, 10, true).unwrap();
        let data = page[0].data.as_ref().unwrap();
        assert_eq!(data["keel.demo"]["count"], serde_json::json!(0));
    }

    #[test]
    fn no_admin_output_carries_a_sessions_csrf_token() {
        let (container, keys) = container_with(&[None]);
        let manager = TransactionManager::new();
        let mut tx = manager.begin();
        container
            .insert(
                &mut tx,
                &keys[0],
                keel_session::CSRF_PACKAGE,
                "token",
                SessionValue::new("s3cret-token".to_owned()),
            )
            .unwrap();
        tx.commit().unwrap();
        let shown = show(&container, &keys[0]).unwrap().unwrap();
        let listed = list_page(&container, None, 10, true).unwrap();
        for json in [&shown, &listed[0]] {
            let data = json.data.as_ref().unwrap();
            assert!(data.contains_key("keel.demo"), "{data:?}");
            assert!(!data.contains_key(keel_session::CSRF_PACKAGE), "{data:?}");
            let printed = serde_json::to_string(json).unwrap();
            assert!(!printed.contains("s3cret-token"), "{printed}");
        }
    }

    #[test]
    fn revoking_a_principal_deletes_only_its_sessions() {
        let (container, _) = container_with(&[Some("ada"), Some("ada"), Some("bob"), None]);
        let revoked = revoke_principal(&container, "ada").unwrap();
        assert_eq!(revoked.removed, 2);
        assert_eq!(list_page(&container, None, 10, false).unwrap().len(), 2);
        assert_eq!(revoke_principal(&container, "nobody").unwrap().removed, 0);
    }

    #[test]
    fn removing_reports_whether_the_session_existed() {
        let (container, keys) = container_with(&[None]);
        assert_eq!(remove(&container, &keys[0]).unwrap(), 1);
        assert_eq!(remove(&container, &keys[0]).unwrap(), 0);
        assert_eq!(show(&container, &keys[0]).unwrap(), None);
    }

    #[test]
    fn stats_count_live_sessions() {
        let (container, _) = container_with(&[None, None, None]);
        let stats = stats(&container).unwrap();
        assert_eq!((stats.sessions, stats.live, stats.expired), (3, 3, 0));
        assert!(stats.age_seconds.is_some());
    }
}
