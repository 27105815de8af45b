//! Shared helpers of the workspace integration tests.

pub mod fuzzing;
