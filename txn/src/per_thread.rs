//! Handles on a shared value whose reference counts are kept per thread.
//!
//! Cloning an `Arc` increments a count that every clone shares. When each
//! request, on whichever thread serves it, takes a handle on the same
//! long-lived value (a container's state, a configuration), that count's
//! cache line moves between cores on every request, and so does anything
//! else on the line, such as the value's first fields. On the 2-core machines
//! Keel is measured on, such a line cost about 80 ns per request; a
//! read-only request touched a dozen of them.

use std::{fmt, ops::Deref, sync::Arc};

use thread_local::ThreadLocal;

/// One shared value, handed out as [`ThreadHandle`]s: every thread clones a
/// handle of its own, so taking and dropping a handle touches a reference
/// count no other thread uses (while the thread stays where it started).
///
/// ```
/// use keel_txn::PerThread;
///
/// let settings = PerThread::new(String::from("shared"));
/// let handle = settings.handle();
/// let elsewhere = std::thread::spawn({
///     let other = settings.handle();
///     move || other.len()
/// });
/// assert_eq!(elsewhere.join().unwrap(), 6);
/// assert_eq!(&*handle, "shared");
/// ```
pub struct PerThread<T: Send + Sync> {
    shared: Arc<T>,
    handles: ThreadLocal<ThreadHandle<T>>,
}

impl<T: Send + Sync> PerThread<T> {
    /// Share `value`.
    pub fn new(value: T) -> Self {
        PerThread {
            shared: Arc::new(value),
            handles: ThreadLocal::new(),
        }
    }

    /// A handle on the value, from the calling thread's own reference count.
    pub fn handle(&self) -> ThreadHandle<T> {
        self.handles
            .get_or(|| ThreadHandle::new(Arc::clone(&self.shared)))
            .clone()
    }

    /// The value itself (no handle taken).
    pub fn get(&self) -> &T {
        &self.shared
    }
}

impl<T: Send + Sync> Deref for PerThread<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.shared
    }
}

impl<T: Send + Sync + fmt::Debug> fmt::Debug for PerThread<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PerThread").field(&self.shared).finish()
    }
}

/// A handle on the value of a [`PerThread`]: keeps it alive and derefs to
/// it. Cloning it increments the count of the thread that made it.
pub struct ThreadHandle<T>(Arc<Padded<Arc<T>>>);

/// Keeps a handle's reference count off the cache lines of other threads'
/// handles (allocations of the same size are often neighbours).
#[repr(align(128))]
struct Padded<T>(T);

impl<T> ThreadHandle<T> {
    /// A handle with a reference count of its own on `value`, for one
    /// thread to clone (as [`PerThread::handle`] makes them).
    pub fn new(value: Arc<T>) -> Self {
        ThreadHandle(Arc::new(Padded(value)))
    }
}

impl<T> Clone for ThreadHandle<T> {
    fn clone(&self) -> Self {
        ThreadHandle(Arc::clone(&self.0))
    }
}

impl<T> Deref for ThreadHandle<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.0
    }
}

impl<T: fmt::Debug> fmt::Debug for ThreadHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ThreadHandle").field(&**self).finish()
    }
}
