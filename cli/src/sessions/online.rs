//! Online mode: the admin operations through a running server's admin API.

use std::{
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;

use super::Admin;
use crate::{
    CliError,
    wire::{ErrorJson, RemovedJson, RevokedJson, SessionJson, StatsJson, SweepJson},
};

/// Sweep batches per `POST /admin/sweep` of `keel sessions sweep --url`.
const BATCHES_PER_REQUEST: usize = 10;

/// How long one admin request may take (a sweep request does at most ten
/// batches, a stats request one pass over the store).
const TIMEOUT: Duration = Duration::from_secs(600);

/// A client of a server's admin API.
pub(crate) struct Online {
    agent: ureq::Agent,
    base: String,
    /// `Bearer TOKEN`; never printed.
    authorization: String,
}

impl std::fmt::Debug for Online {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Online")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// How a request went, short of a transport error.
enum Answer {
    Ok(String),
    NotFound,
}

impl Online {
    /// A client of the server at `url` using the token in `token_file`.
    ///
    /// # Errors
    /// [`CliError::ReadFile`] for an unreadable token file,
    /// [`CliError::Usage`] for an empty one or a URL this build cannot
    /// reach.
    pub(crate) fn connect(url: &str, token_file: &Path) -> Result<Self, CliError> {
        let base = url.trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            return Err(CliError::Usage(format!(
                "{url}: this build of keel speaks plain HTTP only; reach the admin API on a \
                 private interface or through an SSH tunnel"
            )));
        }
        if !base.starts_with("http://") {
            return Err(CliError::Usage(format!(
                "{url}: expected a URL like http://127.0.0.1:8080"
            )));
        }
        let content = std::fs::read_to_string(token_file).map_err(|source| CliError::ReadFile {
            path: token_file.to_owned(),
            source,
        })?;
        let token = content.trim();
        if token.is_empty() {
            return Err(CliError::Usage(format!(
                "the token file {} is empty",
                token_file.display()
            )));
        }
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(TIMEOUT))
                .max_redirects(0)
                .build(),
        );
        Ok(Online {
            agent,
            base,
            authorization: format!("Bearer {token}"),
        })
    }

    fn request(&self, method: &str, path: &str) -> Result<Answer, CliError> {
        let url = format!("{}{path}", self.base);
        let result = match method {
            "GET" => self
                .agent
                .get(&url)
                .header("Authorization", &self.authorization)
                .call(),
            "DELETE" => self
                .agent
                .delete(&url)
                .header("Authorization", &self.authorization)
                .call(),
            _ => self
                .agent
                .post(&url)
                .header("Authorization", &self.authorization)
                .send_empty(),
        };
        let mut response = result.map_err(|source| CliError::Connect {
            url: url.clone(),
            source,
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .read_to_string()
            .map_err(|source| CliError::Connect {
                url: url.clone(),
                source,
            })?;
        if (200..300).contains(&status) {
            return Ok(Answer::Ok(body));
        }
        let error = serde_json::from_str::<ErrorJson>(&body).ok();
        if status == 404 && error.as_ref().is_some_and(|e| e.code == "no_such_session") {
            return Ok(Answer::NotFound);
        }
        let message = match (status, error) {
            (401, _) => "the admin token was refused: check --token-file".to_owned(),
            (_, Some(error)) => error.error,
            (404, None) => "not found: is this a keel server?".to_owned(),
            (_, None) => body.chars().take(200).collect(),
        };
        Err(CliError::Http {
            url,
            status,
            message,
        })
    }

    fn json<T: DeserializeOwned>(&self, method: &str, path: &str) -> Result<Option<T>, CliError> {
        match self.request(method, path)? {
            Answer::NotFound => Ok(None),
            Answer::Ok(body) => {
                serde_json::from_str(&body)
                    .map(Some)
                    .map_err(|source| CliError::BadResponse {
                        url: format!("{}{path}", self.base),
                        source,
                    })
            }
        }
    }

    pub(crate) fn expect<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
    ) -> Result<T, CliError> {
        self.json(method, path)?.ok_or_else(|| CliError::Http {
            url: format!("{}{path}", self.base),
            status: 404,
            message: "not found".to_owned(),
        })
    }
}

impl Admin for Online {
    fn now(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default()
    }

    fn list(
        &self,
        after: Option<&str>,
        limit: usize,
        data: bool,
    ) -> Result<Vec<SessionJson>, CliError> {
        let mut path = format!("/admin/sessions?limit={limit}");
        if let Some(after) = after {
            path.push_str("&after=");
            path.push_str(after);
        }
        if data {
            path.push_str("&data=true");
        }
        self.expect("GET", &path)
    }

    fn show(&self, key: &str) -> Result<Option<SessionJson>, CliError> {
        self.json("GET", &format!("/admin/sessions/{key}"))
    }

    fn remove(&self, key: &str) -> Result<u64, CliError> {
        Ok(self
            .json::<RemovedJson>("DELETE", &format!("/admin/sessions/{key}"))?
            .map_or(0, |removed| removed.removed))
    }

    fn revoke(&self, principal: &str) -> Result<RevokedJson, CliError> {
        let name = utf8_percent_encode(principal, NON_ALPHANUMERIC);
        self.expect("DELETE", &format!("/admin/principals/{name}/sessions"))
    }

    fn stats(&self) -> Result<StatsJson, CliError> {
        self.expect("GET", "/admin/stats")
    }

    fn default_sweep_batch(&self) -> usize {
        crate::sweeper::DEFAULT_BATCH
    }

    fn sweep_step(&self, batch: usize) -> Result<SweepJson, CliError> {
        // Several batches per request (the server paces them), few enough
        // for the progress line to move.
        let max = batch.saturating_mul(BATCHES_PER_REQUEST);
        self.expect("POST", &format!("/admin/sweep?batch={batch}&max={max}"))
    }
}
