//! `SessionManager`: the configured session machinery (client id manager,
//! containers, transaction manager) that hands out one `Session` per request.

use std::{fmt, sync::Arc};

use http::{HeaderMap, Method};
use keel_txn::{PerThread, TransactionManager};

use crate::{ClientIdManager, ContainerRegistry, Session, session::SessionContext};

/// The session machinery of an application: how client ids are read and
/// minted, which containers hold which package's data, and the transaction
/// manager whose transactions wrap each request.
///
/// Cheap to clone.
#[derive(Clone)]
pub struct SessionManager {
    // NOTE: each request's session holds a handle on the context; per-thread
    // handles keep requests on different cores from sharing one reference
    // count.
    context: Arc<PerThread<SessionContext>>,
    transactions: TransactionManager,
}

impl fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionManager")
            .field("containers", &self.context.containers)
            .field("transactions", &self.transactions)
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// Sessions whose ids `ids` reads and mints, with data in `containers`.
    pub fn new(ids: impl ClientIdManager + 'static, containers: ContainerRegistry) -> Self {
        SessionManager {
            context: Arc::new(PerThread::new(SessionContext {
                ids: Arc::new(ids),
                containers,
            })),
            transactions: TransactionManager::new(),
        }
    }

    /// Use `transactions` (its retry policy and counters) for requests.
    pub fn with_transaction_manager(mut self, transactions: TransactionManager) -> Self {
        self.transactions = transactions;
        self
    }

    /// The transaction manager requests run under.
    pub fn transaction_manager(&self) -> &TransactionManager {
        &self.transactions
    }

    /// The container registry.
    pub fn containers(&self) -> &ContainerRegistry {
        &self.context.containers
    }

    /// The client id manager.
    pub fn client_ids(&self) -> &dyn ClientIdManager {
        self.context.ids.as_ref()
    }

    /// Begin the session handling of one request: a fresh transaction, and the
    /// client id read from `headers` (only a validly signed one is used).
    /// Nothing is read from the containers until the session is used.
    pub fn session_for(&self, method: &Method, headers: &HeaderMap) -> Session {
        Session::new(
            self.context.handle(),
            self.transactions.begin(),
            method.clone(),
            headers,
        )
    }
}
