//! keel-session: server-side HTTP sessions. UNDER CONSTRUCTION.

mod client_id;
mod cookie;
#[doc(hidden)]
pub mod doc_support;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod key_ring;
mod layer;
mod manager;
mod pkg_data;
mod registry;
mod session;
mod template;
mod zope_id;

pub use crate::cookie::{
    ClientIdManager, CookieClientIdManager, CookieConfig, CookieLifetime, MAX_CANDIDATES,
    MAX_COOKIE_VALUE_LEN, SameSite,
};
pub use client_id::{ClientId, IdFormat, KEEL_ID_LEN, KeelIdFormat};
pub use error::SessionError;
pub use key_ring::KeyRing;
pub use layer::{
    CommitFailure, ErrorResponder, RetryRequest, SessionLayer, SessionService,
    default_error_response,
};
pub use manager::SessionManager;
pub use pkg_data::SessionPkgData;
pub use registry::ContainerRegistry;
pub use session::{CookieAction, Session};
#[cfg(feature = "minijinja")]
pub use template::template_object;
pub use zope_id::{ZOPE_ID_LEN, ZopeIdFormat, digest_encode};
