//! axum integration: `Session` as an extractor, `SessionError` as a
//! response.

use axum::{
    body::Body,
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
use http::{StatusCode, request::Parts};

use crate::{Session, SessionError};

impl<S: Send + Sync> FromRequestParts<S> for Session {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Session>().cloned().ok_or((
            StatusCode::INTERNAL_SERVER_ERROR,
            "no session: add keel_session::SessionLayer to the router",
        ))
    }
}

impl IntoResponse for SessionError {
    /// See [`SessionError::to_response`]: a conflict becomes a retry of the
    /// whole request by the layer.
    fn into_response(self) -> Response {
        self.to_response().map(Body::from)
    }
}
