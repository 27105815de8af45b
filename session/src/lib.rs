//! keel-session: not yet implemented (see the open issue for this crate).
