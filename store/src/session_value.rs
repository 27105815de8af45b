//! A value held in a session: live as the application inserted it until
//! commit, or a tree read from a container.

use std::{any::Any, fmt, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};

use crate::value::{Value, ValueError, from_value, to_value};

/// A value held in a session.
///
/// A value the application inserts stays **live**: kept exactly as inserted
/// (type-erased, behind an `Arc`), nothing serialized, until the container
/// converts it to a [`Value`] tree at commit. A value read from a container
/// is **stored**: a tree. Typed reads work on both, so a transaction reads
/// its own writes the way later transactions will read them from disk.
/// Cloning is cheap for both.
///
/// ```
/// use keel_store::{SessionValue, Value};
///
/// let value = SessionValue::new(vec![1u32, 2]);
/// assert!(value.is_live());
/// assert_eq!(value.downcast_ref::<Vec<u32>>(), Some(&vec![1, 2]));
/// // Typed reads go through the tree, with its lenient numbers.
/// assert_eq!(value.to_typed::<Vec<u64>>()?, vec![1, 2]);
///
/// let stored = SessionValue::from_tree(value.to_tree()?);
/// assert!(!stored.is_live());
/// assert_eq!(stored.to_tree()?, Value::Seq(vec![Value::U64(1), Value::U64(2)]));
/// assert_eq!(stored.to_typed::<Vec<u32>>()?, vec![1, 2]);
/// assert!(stored.to_typed::<String>().is_err());
/// # Ok::<(), keel_store::ValueError>(())
/// ```
#[derive(Clone)]
pub struct SessionValue(Repr);

#[derive(Clone)]
enum Repr {
    Live(Arc<dyn Live>),
    Stored(Arc<Value>),
}

/// What a live value can do once its type is erased.
trait Live: Send + Sync + 'static {
    fn as_serialize(&self) -> &dyn erased_serde::Serialize;
    fn as_any(&self) -> &dyn Any;
    fn type_name(&self) -> &'static str;
}

impl<T: Serialize + Send + Sync + 'static> Live for T {
    fn as_serialize(&self) -> &dyn erased_serde::Serialize {
        self
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

impl SessionValue {
    /// A live value: `value` as it is, serialized only when the container
    /// commits it (or when it is read with [`SessionValue::to_typed`] or
    /// [`SessionValue::to_tree`]).
    pub fn new<T: Serialize + Send + Sync + 'static>(value: T) -> Self {
        SessionValue(Repr::Live(Arc::new(value)))
    }

    /// A stored value: a tree, as read from a container.
    pub fn from_tree(tree: Value) -> Self {
        SessionValue(Repr::Stored(Arc::new(tree)))
    }

    /// A stored value, sharing the tree a container (or its read cache)
    /// holds: reading a value costs a reference count, not a copy.
    pub(crate) fn from_shared_tree(tree: Arc<Value>) -> Self {
        SessionValue(Repr::Stored(tree))
    }

    /// The value as a tree: a live value is serialized (every call), a
    /// stored one is cloned.
    ///
    /// # Errors
    /// For a live value, its own `Serialize` error (the message is kept in
    /// the [`ValueError`]); for either kind, an error if the tree is nested
    /// deeper than 128 levels, so that every tree this returns can be
    /// encoded and decoded again.
    pub fn to_tree(&self) -> Result<Value, ValueError> {
        match &self.0 {
            Repr::Live(live) => to_value(live.as_serialize()),
            Repr::Stored(tree) => {
                tree.check_depth()?;
                Ok(Value::clone(tree))
            }
        }
    }

    /// The value read as a `T`. A live value is serialized to a tree first,
    /// so this reads exactly what a later transaction will read from the
    /// container, whatever type was inserted.
    ///
    /// # Errors
    /// A live value's own `Serialize` error, or, if the tree does not have
    /// `T`'s shape, an error naming what was expected and what was found.
    pub fn to_typed<T: DeserializeOwned + 'static>(&self) -> Result<T, ValueError> {
        match &self.0 {
            Repr::Live(live) => from_value(&to_value(live.as_serialize())?),
            Repr::Stored(tree) => from_value(tree),
        }
    }

    /// The live value, if it is one and of type `T`; always `None` for a
    /// stored value (use [`SessionValue::to_typed`]).
    pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        match &self.0 {
            Repr::Live(live) => live.as_any().downcast_ref(),
            Repr::Stored(_) => None,
        }
    }

    /// Whether the value is live (inserted in this transaction and not yet
    /// serialized) rather than stored.
    pub fn is_live(&self) -> bool {
        matches!(self.0, Repr::Live(_))
    }

    /// The type name of a live value (as [`std::any::type_name`] gives it);
    /// `None` for a stored value, whose type is not known.
    pub fn type_name(&self) -> Option<&'static str> {
        match &self.0 {
            Repr::Live(live) => Some(live.type_name()),
            Repr::Stored(_) => None,
        }
    }
}

/// A live value shows its type name only (it need not be `Debug`); a stored
/// one shows its tree.
impl fmt::Debug for SessionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Live(live) => f
                .debug_tuple("SessionValue::Live")
                .field(&format_args!("{}", live.type_name()))
                .finish(),
            Repr::Stored(tree) => f.debug_tuple("SessionValue::Stored").field(tree).finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::ser::Error as _;

    use super::*;

    /// Serializable, but neither `Debug` nor `Clone`.
    #[derive(Serialize, serde::Deserialize, PartialEq)]
    struct Cart {
        items: Vec<String>,
        total: u32,
    }

    struct Unpicklable;

    impl Serialize for Unpicklable {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(S::Error::custom("I cannot be pickled"))
        }
    }

    fn cart() -> Cart {
        Cart {
            items: vec!["apple".into()],
            total: 3,
        }
    }

    #[test]
    fn session_values_are_send_sync_and_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<SessionValue>();
    }

    #[test]
    fn a_new_value_is_live_and_keeps_its_type() {
        let value = SessionValue::new(cart());
        assert!(value.is_live());
        assert_eq!(value.type_name(), Some(std::any::type_name::<Cart>()));
        assert!(value.downcast_ref::<Cart>() == Some(&cart()));
        assert!(value.downcast_ref::<String>().is_none());
    }

    #[test]
    fn a_tree_is_stored_and_has_no_type() {
        let value = SessionValue::from_tree(Value::U64(5));
        assert!(!value.is_live());
        assert_eq!(value.type_name(), None);
        assert_eq!(value.downcast_ref::<u64>(), None);
        assert_eq!(value.downcast_ref::<Value>(), None);
    }

    #[test]
    fn to_tree_serializes_a_live_value_and_clones_a_stored_one() -> Result<(), ValueError> {
        let tree = SessionValue::new(cart()).to_tree()?;
        assert_eq!(tree, to_value(&cart())?);
        assert_eq!(SessionValue::from_tree(tree.clone()).to_tree()?, tree);
        Ok(())
    }

    #[test]
    fn to_tree_keeps_the_values_own_serialize_error() {
        let err = SessionValue::new(Unpicklable)
            .to_tree()
            .expect_err("cannot serialize");
        assert!(err.to_string().contains("I cannot be pickled"), "{err}");
        let err = SessionValue::new(Unpicklable)
            .to_typed::<()>()
            .expect_err("cannot serialize");
        assert!(err.to_string().contains("I cannot be pickled"), "{err}");
    }

    #[test]
    fn to_tree_refuses_a_stored_tree_too_deep_to_decode() {
        let mut tree = Value::Unit;
        for _ in 0..200 {
            tree = Value::Seq(vec![tree]);
        }
        let err = SessionValue::from_tree(tree)
            .to_tree()
            .expect_err("too deep");
        assert!(err.to_string().contains("128"), "{err}");
    }

    #[test]
    fn to_typed_reads_live_and_stored_values_alike() -> Result<(), ValueError> {
        let live = SessionValue::new(cart());
        let stored = SessionValue::from_tree(live.to_tree()?);
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct Summary {
            total: Option<u64>,
        }
        for value in [&live, &stored] {
            assert!(value.to_typed::<Cart>()? == cart());
            // Another type of the same shape reads it too: unknown fields are
            // skipped, numbers widen, a plain value reads as `Some`.
            assert_eq!(value.to_typed::<Summary>()?, Summary { total: Some(3) });
        }
        Ok(())
    }

    #[test]
    fn to_typed_with_the_wrong_type_says_what_it_found() {
        let value = SessionValue::new("hello");
        let err = value.to_typed::<u32>().expect_err("wrong type");
        let message = err.to_string();
        assert!(
            message.contains("u32") && message.contains("hello"),
            "{message}"
        );
    }

    #[test]
    fn clones_share_the_live_value() {
        let value = SessionValue::new(cart());
        let clone = value.clone();
        assert!(std::ptr::eq(
            value.downcast_ref::<Cart>().expect("live"),
            clone.downcast_ref::<Cart>().expect("live"),
        ));
    }

    #[test]
    fn debug_shows_a_live_values_type_and_a_stored_values_tree() {
        let live = format!("{:?}", SessionValue::new(cart()));
        assert!(live.starts_with("SessionValue::Live("), "{live}");
        assert!(live.contains("Cart"), "{live}");
        assert!(!live.contains("apple"), "{live}");
        let stored = format!("{:?}", SessionValue::from_tree(Value::Bool(true)));
        assert_eq!(stored, "SessionValue::Stored(Bool(true))");
    }
}
