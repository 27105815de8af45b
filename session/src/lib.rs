//! Server-side HTTP sessions: signed client ids in a cookie, per-package
//! session data in transactional containers, and a tower layer that commits
//! or aborts each request's changes. It is not a cookie-only session store:
//! data lives on the server, in a [`keel_store`] container.
//!
//! ```
//! use axum::{Router, routing::post};
//! use keel_session::{RamContainer, Session, SessionError, SessionLayer};
//!
//! async fn visit(session: Session) -> Result<String, SessionError> {
//!     let data = session.pkg("my.app")?; // creates the session on first use
//!     let visits = data.get::<u64>("visits")?.unwrap_or(0) + 1;
//!     data.insert("visits", visits)?; // committed by the layer after the handler
//!     Ok(format!("visit number {visits}"))
//! }
//!
//! # fn main() -> Result<(), SessionError> {
//! // A durable app uses `RedbContainer::open("sessions.redb")?`: the signing
//! // keys are kept in the container too, so a restart logs nobody out.
//! let layer = SessionLayer::from_container(RamContainer::new())?;
//! let app: Router = Router::new().route("/", post(visit)).layer(layer);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! # The pieces
//! - Client ids: [`ClientIdManager`] reads and mints them;
//!   [`CookieClientIdManager`] (built from a [`CookieConfig`]) keeps them in a
//!   cookie, signed with HMAC-SHA256 under a rotating [`KeyRing`]
//!   ([`KeelIdFormat`]) or in zope.session's format ([`ZopeIdFormat`]).
//! - [`SessionManager`] ties a client id manager, a [`ContainerRegistry`]
//!   (named containers with fallback to the unnamed one) and a transaction
//!   manager together, and hands out one [`Session`] per request.
//! - [`Session`] -> [`SessionPkgData`]: per-package mappings of names to
//!   values, buffered in the request's transaction and serialized at commit.
//!   [`Session::value`] reads one value without first asking for the package.
//! - [`SessionLayer`]: the tower middleware (with the `axum` feature, `Session`
//!   is an extractor); `template_object` (feature `minijinja`) and
//!   [`Session::resolve_path`] give templates read-only access.
//! - CSRF protection: [`Session::csrf_token`] keeps a random token in the
//!   session (changed by [`Session::cycle_id`]), and the opt-in
//!   [`CsrfLayer`] refuses POST, PUT, PATCH and DELETE requests that do not
//!   carry it (`X-CSRF-Token` header or `csrf_token` form field) with 403.
//!
//! # Deliberate differences from zope.session
//! - **Lazy cookies.** zope mints an id and sets the cookie as soon as a
//!   request is adapted to a session, even to read; Keel mints only when a
//!   request creates session data ([`Session::pkg`]), so read-only visitors get
//!   no cookie (scenario 83 not followed).
//! - **Strong ids.** 128 random bits from the OS, HMAC-SHA256, constant-time
//!   verification, key rotation; the zope format is still available (with
//!   CSPRNG randomness) for migrations.
//! - **No resurrection.** An expired session is never returned, and a validly
//!   signed id whose session is gone is not reused (zope returned and
//!   refreshed an unswept stale session; scenario 88).
//! - **No sweeping in requests.** Expired sessions are invisible at once and
//!   deleted by a background sweep (zope swept inside whatever request came
//!   along, scenarios 37, 43, 87).
//! - **SameSite=Lax and HttpOnly by default**; Partitioned settable.
//! - **Duplicate cookies:** the first validly signed one wins (zope: the last
//!   one, so a junk cookie could log a user out).
//! - **A package exists while it holds a name**: [`Session::get`] of a package
//!   created but left empty is `None`.
//! - **Beyond zope:** [`Session::invalidate`], [`Session::cycle_id`],
//!   principals ([`Session::set_principal`]) with revoke-all in the admin API,
//!   and no lost updates: concurrent requests of one client conflict and are
//!   re-run by the layer.

mod client_id;
mod cookie;
mod csrf;
#[doc(hidden)]
pub mod doc_support;
mod error;
#[cfg(feature = "axum")]
mod extract;
mod hot_sessions;
mod key_ring;
mod layer;
mod manager;
mod pkg_data;
mod registry;
mod session;
mod template;
mod verified_ids;
mod zope_id;

pub use crate::cookie::{
    ClientIdManager, CookieClientIdManager, CookieConfig, CookieLifetime, MAX_CANDIDATES,
    MAX_COOKIE_VALUE_LEN, SameSite,
};
pub use client_id::{ClientId, IdFormat, KEEL_ID_LEN, KeelIdFormat};
pub use csrf::{CSRF_FORM_FIELD, CSRF_HEADER, CSRF_PACKAGE, CsrfLayer, CsrfService, CsrfToken};
pub use error::SessionError;
/// The store crate, and the containers and settings a user needs, so that
/// one `use keel_session::...` sets up an app.
pub use keel_store::{
    self, ExpiryPolicy, RamContainer, RedbContainer, RedbOptions, SessionContainer,
};
pub use key_ring::{KEY_RING_SETTING, KeyRing, SharedKeyRing};
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

/// The README's example, compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
