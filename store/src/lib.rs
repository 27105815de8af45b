//! keel-store: transactional session data containers (redb and RAM).
//!
//! UNDER CONSTRUCTION: see `docs/design.md` for the contract.

mod container;
mod error;
mod expiry;
mod value;

pub use container::{
    ClientKey, ContainerStats, SessionAdmin, SessionContainer, SessionDetail, SessionInfo,
    SessionSummary, SweepReport,
};
pub use error::StoreError;
pub use expiry::{Clock, ExpiryPolicy, ManualClock, SystemClock};
pub use value::{Value, ValueError, from_value, to_value};

/// PLACEHOLDER: a value held in a session (live until commit, then a tree).
#[derive(Debug, Clone)]
pub struct SessionValue(pub Value);
