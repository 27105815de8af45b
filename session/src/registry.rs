//! Which container holds which package's data: named containers with a
//! fallback to the unnamed one.

use std::{collections::HashMap, fmt, sync::Arc};

use keel_store::SessionContainer;

use crate::SessionError;

/// Maps package ids to session data containers.
///
/// A package id with a container registered under its name uses it; any
/// other package id uses the unnamed (default) container; with neither,
/// lookups fail with [`SessionError::NoContainer`]. One container may be
/// registered under several names and then shares its data between them.
///
/// ```
/// use std::sync::Arc;
/// use keel_session::ContainerRegistry;
/// use keel_store::RamContainer;
///
/// let carts = Arc::new(RamContainer::new());
/// let registry = ContainerRegistry::new()
///     .with_default(Arc::new(RamContainer::new()))
///     .with_named("shop.cart", carts.clone());
/// assert!(registry.lookup("shop.cart").is_ok());
/// assert!(registry.lookup("anything.else").is_ok()); // the default
/// ```
#[derive(Clone, Default)]
pub struct ContainerRegistry {
    default: Option<Arc<dyn SessionContainer>>,
    named: HashMap<String, Arc<dyn SessionContainer>>,
}

impl fmt::Debug for ContainerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.named.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("ContainerRegistry")
            .field("default", &self.default.is_some())
            .field("named", &names)
            .finish()
    }
}

impl ContainerRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Use `container` for every package id without a container of its own.
    pub fn with_default(mut self, container: Arc<dyn SessionContainer>) -> Self {
        self.default = Some(container);
        self
    }

    /// Use `container` for package id `package`.
    pub fn with_named(
        mut self,
        package: impl Into<String>,
        container: Arc<dyn SessionContainer>,
    ) -> Self {
        self.named.insert(package.into(), container);
        self
    }

    /// The container for `package`: its own, or the default.
    ///
    /// # Errors
    /// [`SessionError::NoContainer`] if there is neither.
    pub fn lookup(&self, package: &str) -> Result<&Arc<dyn SessionContainer>, SessionError> {
        self.named
            .get(package)
            .or(self.default.as_ref())
            .ok_or_else(|| SessionError::NoContainer {
                package: package.to_owned(),
            })
    }

    /// Every distinct container, the default first.
    pub fn containers(&self) -> Vec<Arc<dyn SessionContainer>> {
        let mut all: Vec<Arc<dyn SessionContainer>> = Vec::new();
        for container in self.default.iter().chain(self.named.values()) {
            if !all.iter().any(|known| same_container(known, container)) {
                all.push(Arc::clone(container));
            }
        }
        all
    }
}

/// Whether two handles point at the same container instance.
pub(crate) fn same_container(a: &Arc<dyn SessionContainer>, b: &Arc<dyn SessionContainer>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}
