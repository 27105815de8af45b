//! What `--db` names: a redb file (a path), or a database server (a URL
//! whose scheme picks the backend: `postgres://`, `redis://`,
//! `redis+cluster://`).

use std::path::{Path, PathBuf};

/// The session database given with `--db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Database {
    /// An embedded redb file.
    File(PathBuf),
    /// A PostgreSQL database (`postgres://USER@HOST:PORT/DB`), and the
    /// schema Keel keeps its tables in (`?schema=NAME`; default `keel`).
    Postgres {
        /// The URL without Keel's own `schema` parameter.
        url: String,
        schema: Option<String>,
    },
    /// A Redis server (`redis://HOST:PORT[/DB]`) or Redis Cluster
    /// (`redis+cluster://HOST:PORT[,HOST:PORT...]`), the prefix of Keel's keys
    /// (`?prefix=NAME`; default `keel`), and how many replicas must have a
    /// commit before it is acknowledged (`?replicas=N`; default 0).
    Redis {
        /// The URL without Keel's own `prefix` and `replicas` parameters.
        url: String,
        prefix: Option<String>,
        replicas: Option<String>,
    },
}

/// `url` without Keel's own parameter `name=...`, and that parameter's value.
fn take_parameter(url: &str, name: &str) -> (String, Option<String>) {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut taken = None;
    let mut rest = Vec::new();
    let prefix = format!("{name}=");
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.strip_prefix(&prefix) {
            Some(value) => taken = Some(value.to_owned()),
            None => rest.push(pair),
        }
    }
    let url = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    (url, taken)
}

impl Database {
    /// Read `--db`: a `postgres://` or `postgresql://` URL, else a path.
    pub(crate) fn from_arg(db: &Path) -> Database {
        match db.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                let (url, schema) = take_parameter(url, "schema");
                Database::Postgres { url, schema }
            }
            Some(url) if url.starts_with("redis://") || url.starts_with("redis+cluster://") => {
                let (url, prefix) = take_parameter(url, "prefix");
                let (url, replicas) = take_parameter(&url, "replicas");
                Database::Redis {
                    url,
                    prefix,
                    replicas,
                }
            }
            _ => Database::File(db.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_backend_and_a_path_stays_redb() {
        assert_eq!(
            Database::from_arg(Path::new("postgres://u@h:5432/d")),
            Database::Postgres {
                url: "postgres://u@h:5432/d".to_owned(),
                schema: None
            }
        );
        assert_eq!(
            Database::from_arg(Path::new(
                "postgresql://h/d?connect_timeout=3&schema=app_sessions"
            )),
            Database::Postgres {
                url: "postgresql://h/d?connect_timeout=3".to_owned(),
                schema: Some("app_sessions".to_owned())
            }
        );
        assert_eq!(
            Database::from_arg(Path::new("redis://127.0.0.1:6379/2?prefix=app&replicas=1")),
            Database::Redis {
                url: "redis://127.0.0.1:6379/2".to_owned(),
                prefix: Some("app".to_owned()),
                replicas: Some("1".to_owned())
            }
        );
        assert_eq!(
            Database::from_arg(Path::new(
                "redis+cluster://10.0.0.1:7000,10.0.0.2:7000?prefix=app"
            )),
            Database::Redis {
                url: "redis+cluster://10.0.0.1:7000,10.0.0.2:7000".to_owned(),
                prefix: Some("app".to_owned()),
                replicas: None
            }
        );
        for path in ["./keel.redb", "postgres", "dir/postgres://x", "redis"] {
            assert_eq!(
                Database::from_arg(Path::new(path)),
                Database::File(PathBuf::from(path))
            );
        }
    }
}
