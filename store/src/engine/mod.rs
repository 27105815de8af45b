//! The transactional core every backend shares: a transaction's buffer
//! (reads and their versions, writes as live values, the touch rule,
//! savepoints), the change set it commits and the one place where a change
//! set is validated and applied, the records and the value codec, and the
//! admin figures. A backend only stores: it reads records with their
//! versions ([`view::ReadView`]) and applies a validated change set
//! atomically ([`view::WriteView`], or its own engine's script for a
//! database server).

pub(crate) mod admin;
pub(crate) mod apply;
pub(crate) mod buffer;
pub(crate) mod container;
pub(crate) mod records;
#[cfg(any(feature = "postgres", feature = "redis"))]
pub(crate) mod remote;
pub(crate) mod view;
