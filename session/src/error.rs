//! The crate's one error type.

use keel_store::StoreError;
use keel_txn::TxnError;

/// Everything that can go wrong in the session layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The request carries no usable client id and this manager may not mint
    /// one here (`thirdparty` mode, or `post_only` on a non-POST request).
    #[error("the request has no client id and none may be minted here ({reason})")]
    MissingClientId {
        /// Why no id could be minted.
        reason: &'static str,
    },
    /// No container is registered for the package id, and there is no
    /// unnamed (fallback) container either.
    #[error(
        "no session data container is registered for package {package:?}, and there is no default container"
    )]
    NoContainer {
        /// The package id looked up.
        package: String,
    },
    /// The container failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The transaction failed.
    #[error(transparent)]
    Transaction(#[from] TxnError),
}

impl SessionError {
    /// Whether re-running the request in a fresh transaction may succeed (a
    /// conflict).
    pub fn is_retryable(&self) -> bool {
        match self {
            SessionError::Store(err) => err.is_retryable(),
            SessionError::Transaction(err) => err.is_retryable(),
            _ => false,
        }
    }
}

impl keel_txn::Retryable for SessionError {
    fn is_retryable(&self) -> bool {
        SessionError::is_retryable(self)
    }
}
