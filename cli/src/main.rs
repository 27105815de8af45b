//! The `keel` command: not yet implemented.
fn main() {}
