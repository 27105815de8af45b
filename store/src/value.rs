//! The self-describing value tree values are stored as.
//!
//! PLACEHOLDER API: the bodies are being written (see the value-tree task);
//! the signatures are the contract.

use serde::{Serialize, de::DeserializeOwned};

/// A self-describing model of the serde data model; postcard-encoded on disk.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum Value {
    /// `()` / `None` / unit structs.
    Unit,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    I64(i64),
    /// An unsigned integer.
    U64(u64),
    /// A float.
    F64(f64),
    /// A string.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A sequence.
    Seq(Vec<Value>),
    /// A map, in serialization order.
    Map(Vec<(Value, Value)>),
}

/// A value that could not be converted to or from a [`Value`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

/// Convert `value` into a tree.
///
/// # Errors
/// The value's own `Serialize` error.
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ValueError> {
    let _ = value;
    Err(ValueError("not yet implemented".into()))
}

/// Deserialize a `T` from a tree.
///
/// # Errors
/// When the tree does not have `T`'s shape.
pub fn from_value<T: DeserializeOwned>(value: &Value) -> Result<T, ValueError> {
    let _ = value;
    Err(ValueError("not yet implemented".into()))
}
