//! The expiry policy `keel serve` ran with, remembered in the database so
//! that offline `keel sessions` commands judge expiry (and sweep) with the
//! same timeout and resolution as the server.
//!
//! Stored as the setting [`EXPIRY_SETTING`]: JSON
//! `{"timeout": S, "resolution": S, "absolute_lifetime": S|null}`.

use keel_store::{ExpiryPolicy, SessionAdmin, StoreError};
use serde::{Deserialize, Serialize};

/// The setting under which `keel serve` records its expiry policy.
pub(crate) const EXPIRY_SETTING: &str = "keel.cli.expiry";

/// The JSON form of an [`ExpiryPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PolicyJson {
    /// Inactivity timeout, seconds (0 = never).
    pub(crate) timeout: u64,
    /// Last-access resolution, seconds.
    pub(crate) resolution: u64,
    /// Absolute lifetime from creation, seconds, if any.
    pub(crate) absolute_lifetime: Option<u64>,
}

impl From<&ExpiryPolicy> for PolicyJson {
    fn from(policy: &ExpiryPolicy) -> Self {
        PolicyJson {
            timeout: policy.timeout(),
            resolution: policy.resolution(),
            absolute_lifetime: policy.absolute_lifetime(),
        }
    }
}

impl From<PolicyJson> for ExpiryPolicy {
    fn from(json: PolicyJson) -> Self {
        ExpiryPolicy::default()
            .with_timeout(json.timeout)
            .with_resolution(json.resolution)
            .with_absolute_lifetime(json.absolute_lifetime)
    }
}

/// Remember `policy` in the database (a no-op if it is already recorded).
pub(crate) fn store(admin: &dyn SessionAdmin, policy: &ExpiryPolicy) -> Result<(), StoreError> {
    if load(admin)?.as_ref() == Some(policy) {
        return Ok(());
    }
    let json = serde_json::to_vec(&PolicyJson::from(policy)).unwrap_or_default();
    admin.store_setting(EXPIRY_SETTING, &json)
}

/// The policy a server recorded, if any. A setting that does not parse is
/// ignored (it only provides defaults).
pub(crate) fn load(admin: &dyn SessionAdmin) -> Result<Option<ExpiryPolicy>, StoreError> {
    Ok(admin
        .load_setting(EXPIRY_SETTING)?
        .and_then(|bytes| serde_json::from_slice::<PolicyJson>(&bytes).ok())
        .map(ExpiryPolicy::from))
}

#[cfg(test)]
mod tests {
    use keel_store::RamContainer;

    use super::*;

    #[test]
    fn a_stored_policy_is_loaded_back() {
        let container = RamContainer::new();
        assert_eq!(load(&container).unwrap(), None);
        let policy = ExpiryPolicy::default()
            .with_timeout(60)
            .with_resolution(5)
            .with_absolute_lifetime(Some(86400));
        store(&container, &policy).unwrap();
        assert_eq!(load(&container).unwrap(), Some(policy));
    }
}
