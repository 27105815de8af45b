//! Template access to session data: zope's `request/session:pkg/key` path,
//! and (feature `minijinja`) a `session("pkg").key` template object. Reading
//! through a template never creates session data.

use keel_store::SessionValue;

use crate::{Session, SessionError};

impl Session {
    /// Resolve a `"pkg/key"` path (zope's `request/session:pkg/key`): the
    /// value of `key` in package `pkg`, or `None`. Splits at the first `/`, so
    /// keys may contain slashes but package ids may not. Never creates
    /// anything.
    ///
    /// # Errors
    /// [`SessionError::InvalidPath`] for a path without `/`; otherwise as for
    /// [`Session::get`].
    pub fn resolve_path(&self, path: &str) -> Result<Option<SessionValue>, SessionError> {
        let Some((package, key)) = path.split_once('/') else {
            return Err(SessionError::InvalidPath {
                path: path.to_owned(),
            });
        };
        match self.get(package)? {
            Some(data) => data.get_value(key),
            None => Ok(None),
        }
    }
}

#[cfg(feature = "minijinja")]
pub use self::jinja::template_object;

#[cfg(feature = "minijinja")]
mod jinja {
    use std::{collections::BTreeMap, fmt, sync::Arc};

    use minijinja::{
        Error, ErrorKind, State,
        value::{Object, Value},
    };

    use crate::{Session, SessionError};

    /// A minijinja value for `session`: call it with a package id
    /// (`session("my.app").count`) or index it (`session["my.app"].count`) to
    /// get that package's data as a map; a package without data gives an
    /// empty map. Reading never creates a session, mints an id or sets a
    /// cookie.
    ///
    /// ```
    /// # use keel_session::doc_support::session_for_docs;
    /// let session = session_for_docs();
    /// session.pkg("my.app")?.insert("count", 3)?;
    /// let env = minijinja::Environment::new();
    /// let html = env.render_str(
    ///     "count={{ session('my.app').count }} other={{ session('x').y is undefined }}",
    ///     minijinja::context! { session => keel_session::template_object(&session) },
    /// ).unwrap();
    /// assert_eq!(html, "count=3 other=True");
    /// # Ok::<(), keel_session::SessionError>(())
    /// ```
    pub fn template_object(session: &Session) -> Value {
        Value::from_object(SessionObject(session.clone()))
    }

    struct SessionObject(Session);

    impl fmt::Debug for SessionObject {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("<session>")
        }
    }

    impl SessionObject {
        fn package(&self, package: &str) -> Result<Value, Error> {
            let to_error =
                |err: SessionError| Error::new(ErrorKind::InvalidOperation, err.to_string());
            let mut map = BTreeMap::new();
            if let Some(data) = self.0.get(package).map_err(to_error)? {
                for (name, value) in data.iter().map_err(to_error)? {
                    let tree = value
                        .to_tree()
                        .map_err(|err| Error::new(ErrorKind::InvalidOperation, err.to_string()))?;
                    map.insert(name, Value::from(minijinja::value::Serde(tree.to_json())));
                }
            }
            Ok(Value::from(map))
        }
    }

    impl Object for SessionObject {
        fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
            key.as_str().and_then(|package| self.package(package).ok())
        }

        fn call(
            self: &Arc<Self>,
            _state: &mut State<'_, '_>,
            args: &[Value],
        ) -> Result<Value, Error> {
            match args {
                [package] => match package.as_str() {
                    Some(package) => self.package(package),
                    None => Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "session() takes a package id string",
                    )),
                },
                _ => Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "session() takes exactly one package id",
                )),
            }
        }
    }
}
