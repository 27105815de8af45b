//! The small tokio runtime a network container runs its connections on, so
//! it works the same under any caller: a multi-threaded server, a
//! current-thread runtime, or blocking code. Async callers await an answer
//! without holding a thread; blocking callers wait on a channel.

use std::{future::Future, sync::mpsc};

use tokio::{
    runtime::{Handle, Runtime, RuntimeFlavor},
    sync::oneshot,
};

use crate::StoreError;

/// A one-worker runtime, shut down without waiting when dropped (it may be
/// dropped inside another runtime, where a blocking shutdown panics).
#[derive(Debug)]
pub(crate) struct OwnRuntime {
    runtime: Option<Runtime>,
    handle: Handle,
}

impl OwnRuntime {
    /// Start one, its thread named `name`.
    ///
    /// # Errors
    /// [`StoreError::Storage`] if the thread cannot be started.
    pub(crate) fn start(name: &str) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|err| StoreError::Storage {
                operation: "starting a container's runtime",
                source: Box::new(err),
            })?;
        Ok(OwnRuntime {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Run `work` there, detached.
    pub(crate) fn detach(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.handle.spawn(work);
    }

    /// Run `work` there and wait for it, blocking the calling thread. On a
    /// worker of a multi-threaded tokio runtime the wait is announced
    /// (`block_in_place`), so the worker's other tasks move on meanwhile.
    ///
    /// # Errors
    /// [`StoreError::Closed`] if the runtime is gone.
    pub(crate) fn wait_for<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (sender, answer) = mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = sender.send(work.await);
        });
        blocking_recv(answer)
    }

    /// Run `work` there; the returned future waits for it without holding a
    /// thread.
    pub(crate) fn spawn<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
        let (sender, answer) = oneshot::channel();
        self.handle.spawn(async move {
            let _ = sender.send(work.await);
        });
        async move { answer.await.map_err(|_| StoreError::Closed)? }
    }
}

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Wait for a blocking answer (see [`OwnRuntime::wait_for`]).
///
/// # Errors
/// [`StoreError::Closed`] if the sender went away.
pub(crate) fn blocking_recv<T>(answer: mpsc::Receiver<T>) -> Result<T, StoreError> {
    let receive = || answer.recv().map_err(|_| StoreError::Closed);
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(receive)
        }
        _ => receive(),
    }
}
