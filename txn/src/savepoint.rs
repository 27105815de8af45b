//! Savepoints: named points inside a transaction to roll back to.

use crate::data_manager::SavepointState;

/// A handle to a savepoint taken with
/// [`Transaction::savepoint`](crate::Transaction::savepoint); pass it to
/// [`Transaction::rollback`](crate::Transaction::rollback).
///
/// A savepoint stays valid until the transaction commits or aborts, or rolls
/// back to an earlier savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Savepoint {
    transaction_id: u64,
    id: u64,
}

impl Savepoint {
    pub(crate) fn new(transaction_id: u64, id: u64) -> Self {
        Savepoint { transaction_id, id }
    }

    pub(crate) fn transaction_id(&self) -> u64 {
        self.transaction_id
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

/// What the transaction keeps for a savepoint: one state per data manager that
/// had joined when it was taken (`None` for one without savepoint support,
/// taken optimistically). Data managers at later indexes joined afterwards.
pub(crate) struct SavepointRecord {
    pub(crate) id: u64,
    pub(crate) states: Vec<Option<SavepointState>>,
}
