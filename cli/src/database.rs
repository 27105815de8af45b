//! What `--db` names: a redb file (a path), or a database server (a URL
//! whose scheme picks the backend).

use std::path::{Path, PathBuf};

/// The session database given with `--db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Database {
    /// An embedded redb file.
    File(PathBuf),
    /// A PostgreSQL database (`postgres://USER@HOST:PORT/DB`).
    Postgres(String),
}

impl Database {
    /// Read `--db`: a `postgres://` or `postgresql://` URL, else a path.
    pub(crate) fn from_arg(db: &Path) -> Database {
        match db.to_str() {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Database::Postgres(url.to_owned())
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
            Database::Postgres("postgres://u@h:5432/d".to_owned())
        );
        assert!(matches!(
            Database::from_arg(Path::new("postgresql://h/d")),
            Database::Postgres(_)
        ));
        for path in ["./keel.redb", "postgres", "dir/postgres://x"] {
            assert_eq!(
                Database::from_arg(Path::new(path)),
                Database::File(PathBuf::from(path))
            );
        }
    }
}
