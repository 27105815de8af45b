//! keel-session: server-side HTTP sessions. UNDER CONSTRUCTION.

mod error;

pub use error::SessionError;
