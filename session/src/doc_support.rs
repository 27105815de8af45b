//! Helpers for the crate's doc examples; not part of the API.

use std::sync::Arc;

use http::{HeaderMap, Method};
use keel_store::RamContainer;

use crate::{ContainerRegistry, CookieConfig, KeyRing, Session, SessionManager};

/// A session of a new client over a RAM container, for doc examples.
///
/// # Panics
/// If the OS random generator fails (doc examples only).
#[allow(clippy::expect_used)]
pub fn session_for_docs() -> Session {
    let ring = KeyRing::generate().expect("the OS random generator works");
    let ids = CookieConfig::keel(ring)
        .build()
        .expect("the default cookie configuration is valid");
    let manager = SessionManager::new(
        ids,
        ContainerRegistry::new().with_default(Arc::new(RamContainer::new())),
    );
    manager.session_for(&Method::POST, &HeaderMap::new())
}
