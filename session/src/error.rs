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
    /// A template path is not of the form `pkg/key`.
    #[error("session path {path:?} is not of the form \"pkg/key\"")]
    InvalidPath {
        /// The path given.
        path: String,
    },
    /// The request's transaction was already committed or aborted; the
    /// session can no longer be used.
    #[error("the request's session was already committed or aborted")]
    RequestFinished,
    /// A stored signing key ring could not be decoded: it is truncated,
    /// corrupt, not a key ring, or written by a newer Keel.
    #[error("invalid signing key ring: {reason}")]
    InvalidKeyRing {
        /// What is wrong with the encoded key ring.
        reason: &'static str,
    },
    /// The operating system's random number generator failed, so no id or
    /// key could be generated.
    #[error("the operating system's random number generator failed")]
    Random {
        /// The generator's error.
        #[source]
        source: std::io::Error,
    },
    /// A cookie client id manager setting is invalid.
    #[error("invalid cookie setting {setting}: {reason}")]
    InvalidCookieConfig {
        /// The setting (`name`, `domain`, `path`, `lifetime`, ...).
        setting: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A secret file could not be read, or holds no secret.
    #[error("cannot read a secret from {path}")]
    SecretFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why (an I/O error, or `InvalidData` for an empty file).
        #[source]
        source: std::io::Error,
    },
    /// A stored value is not of the type the reader asked for (a typed read:
    /// [`SessionPkgData::get`](crate::SessionPkgData::get),
    /// [`Session::value`](crate::Session::value)). Nothing was changed.
    #[error("value {key:?} of package {package:?} is not of the requested type: {source}")]
    WrongType {
        /// The package id.
        package: String,
        /// The key within the package.
        key: String,
        /// What the deserializer said.
        #[source]
        source: keel_store::ValueError,
    },
    /// A request with an unsafe method (POST, PUT, PATCH, DELETE, ...) did not
    /// carry its session's CSRF token, or carried another one
    /// ([`CsrfLayer`](crate::CsrfLayer)); its response is 403 with code
    /// `csrf_token_mismatch`.
    #[error(
        "the request's CSRF token {reason}: reload the page and try again (a program sends the session's token in the X-CSRF-Token header or in the csrf_token form field)"
    )]
    CsrfTokenMismatch {
        /// What is wrong: `"is missing"` or `"does not match the session's"`
        /// (also when the request has no session).
        reason: &'static str,
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

    /// Whether the session store cannot be reached for now (the database
    /// server is down or the link to it failed): an HTTP server answers 503.
    pub fn is_unavailable(&self) -> bool {
        match self {
            SessionError::Store(err) => err.is_unavailable(),
            SessionError::Transaction(err) => err
                .source_as::<keel_store::StoreError>()
                .is_some_and(keel_store::StoreError::is_unavailable),
            _ => false,
        }
    }
}

impl keel_txn::Retryable for SessionError {
    fn is_retryable(&self) -> bool {
        SessionError::is_retryable(self)
    }
}
