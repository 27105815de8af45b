//! Every container of this crate is a [`BufferedContainer`]: it says how to
//! join a transaction and reach its storage's read view, and the core does
//! the rest. The [`SessionContainer`] operations exist once, here, for all
//! backends.

use std::fmt;

use keel_txn::Transaction;

use crate::{
    ClientKey, Clock, ExpiryPolicy, Preload, ReadAhead, SessionAdmin, SessionContainer,
    SessionInfo, SessionValue, StoreError,
    engine::{
        buffer::{At, Buffer},
        view::ReadView,
    },
};

/// What a backend's container provides for the core to implement
/// [`SessionContainer`] on top of it: the transaction's [`Buffer`] and a
/// [`ReadView`] of its storage, for the duration of one operation.
pub(crate) trait BufferedContainer:
    SessionAdmin + Send + Sync + fmt::Debug + 'static
{
    /// The storage as one operation reads it.
    type View<'a>: ReadView;

    /// The container's expiry policy.
    fn policy(&self) -> &ExpiryPolicy;

    /// The container's clock.
    fn clock(&self) -> &dyn Clock;

    /// Join `tx` (lazily, with this backend's data manager) and run `op` on
    /// its buffer and the storage's read view.
    ///
    /// # Errors
    /// [`StoreError::Transaction`] if the transaction cannot be joined, the
    /// view's storage errors, and whatever `op` returns.
    fn with_buffer<T>(
        &self,
        tx: &mut Transaction,
        op: impl for<'v> FnOnce(&mut Buffer, &mut Self::View<'v>, At) -> Result<T, StoreError>,
    ) -> Result<T, StoreError>;

    /// [`SessionContainer::preload`]: nothing to read ahead unless the
    /// backend reads over the network.
    ///
    /// # Errors
    /// As for [`SessionContainer::preload`].
    fn preload(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        read_ahead: ReadAhead,
    ) -> Result<Option<Preload>, StoreError> {
        let _ = (tx, client, read_ahead);
        Ok(None)
    }

    /// [`SessionContainer::declare_fresh`].
    ///
    /// # Errors
    /// As for [`SessionContainer::declare_fresh`].
    fn declare_fresh(&self, tx: &mut Transaction, client: &ClientKey) -> Result<(), StoreError> {
        let _ = (tx, client);
        Ok(())
    }

    /// [`SessionContainer::can_rename`].
    fn can_rename(&self, from: &ClientKey, to: &ClientKey) -> bool {
        let _ = (from, to);
        true
    }

    /// The policy and the time of one operation.
    fn at(&self) -> At {
        At {
            policy: *self.policy(),
            now: self.clock().now(),
        }
    }
}

// NOTE: a blanket implementation, so that no backend can implement an
// operation differently: the semantics live in `Buffer`.
impl<C: BufferedContainer> SessionContainer for C {
    fn expiry(&self) -> &ExpiryPolicy {
        self.policy()
    }

    fn now(&self) -> u64 {
        self.clock().now()
    }

    fn preload(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        read_ahead: ReadAhead,
    ) -> Result<Option<Preload>, StoreError> {
        BufferedContainer::preload(self, tx, client, read_ahead)
    }

    fn declare_fresh(&self, tx: &mut Transaction, client: &ClientKey) -> Result<(), StoreError> {
        BufferedContainer::declare_fresh(self, tx, client)
    }

    fn can_rename(&self, from: &ClientKey, to: &ClientKey) -> bool {
        BufferedContainer::can_rename(self, from, to)
    }

    fn session(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<Option<SessionInfo>, StoreError> {
        self.with_buffer(tx, |b, v, at| b.session(v, at, client))
    }

    fn create_session(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<SessionInfo, StoreError> {
        self.with_buffer(tx, |b, v, at| b.create_session(v, at, client))
    }

    fn delete_session(&self, tx: &mut Transaction, client: &ClientKey) -> Result<bool, StoreError> {
        self.with_buffer(tx, |b, v, at| b.delete_session(v, at, client))
    }

    fn rename_session(
        &self,
        tx: &mut Transaction,
        from: &ClientKey,
        to: &ClientKey,
    ) -> Result<(), StoreError> {
        self.with_buffer(tx, |b, v, at| b.rename_session(v, at, from, to))
    }

    fn set_principal(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        principal: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with_buffer(tx, |b, v, at| b.set_principal(v, at, client, principal))
    }

    fn get(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<Option<SessionValue>, StoreError> {
        self.with_buffer(tx, |b, v, at| b.get(v, at, client, package, name))
    }

    fn touch_and_get(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<Option<SessionValue>, StoreError> {
        self.with_buffer(tx, |b, v, at| b.touch_and_get(v, at, client, package, name))
    }

    fn insert(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
        value: SessionValue,
    ) -> Result<(), StoreError> {
        self.with_buffer(tx, |b, v, at| b.insert(v, at, client, package, name, value))
    }

    fn remove(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        self.with_buffer(tx, |b, v, at| b.remove(v, at, client, package, name))
    }

    fn names(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
    ) -> Result<Vec<String>, StoreError> {
        self.with_buffer(tx, |b, v, at| b.names(v, at, client, package))
    }

    fn has_names(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
        package: &str,
    ) -> Result<bool, StoreError> {
        self.with_buffer(tx, |b, v, at| b.has_names(v, at, client, package))
    }

    fn packages(
        &self,
        tx: &mut Transaction,
        client: &ClientKey,
    ) -> Result<Vec<String>, StoreError> {
        self.with_buffer(tx, |b, v, at| b.packages(v, at, client))
    }
}
