//! Hot sessions: once a request of a session has met a conflict, the
//! requests of that session in this process take turns, one at a time,
//! until none is waiting. Optimistic commits are cheapest when conflicts are
//! rare; under one session written by many connections at once they are
//! not: every attempt races every other and a request may lose all of its
//! attempts (seen: 76-86 of ~11k requests answered 503 after 32 attempts).
//! Taking turns, a retry conflicts only with writers in other processes.
//!
//! While no session is hot, a request costs one load of a counter that is
//! only written when a session becomes hot or cools (no lock, no shared
//! write on the request path); otherwise one map lookup under a lock that is
//! not held across any await.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use keel_store::ClientKey;
use parking_lot::Mutex;
use tokio::sync::{Mutex as TurnLock, OwnedMutexGuard};

/// The sessions whose requests take turns, each with its queue.
#[derive(Debug, Default)]
pub(crate) struct HotSessions {
    queues: Mutex<HashMap<ClientKey, Arc<TurnLock<()>>>>,
    /// How many sessions are hot (entries of `queues`), kept under its lock.
    hot_count: AtomicUsize,
}

/// A request's turn on its session: the others wait until it is dropped.
#[derive(Debug)]
pub(crate) struct Turn {
    hot: Arc<HotSessions>,
    key: ClientKey,
    queue: Arc<TurnLock<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl HotSessions {
    /// Whether the requests of `key` take turns now.
    pub(crate) fn is_hot(&self, key: &ClientKey) -> bool {
        // NOTE: a session turning hot meanwhile is seen by the next request;
        // this one merely races once more, as before it was hot.
        self.hot_count.load(Ordering::Relaxed) != 0 && self.queues.lock().contains_key(key)
    }

    /// Wait for this request's turn on `key` (making the session hot if it
    /// was not); the turn ends when the returned value is dropped.
    pub(crate) async fn turn(self: &Arc<Self>, key: ClientKey) -> Turn {
        // NOTE: the queue's Arc is cloned under the map's lock, and `Turn`'s
        // drop removes the queue only under that lock when no one else holds
        // it, so a request never waits on a queue that was removed.
        let queue = {
            let mut queues = self.queues.lock();
            let queue = queues.entry(key).or_insert_with(|| {
                self.hot_count.fetch_add(1, Ordering::Relaxed);
                Arc::default()
            });
            Arc::clone(queue)
        };
        let guard = Arc::clone(&queue).lock_owned().await;
        Turn {
            hot: Arc::clone(self),
            key,
            queue,
            guard: Some(guard),
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut queues = self.hot.queues.lock();
        // The map's reference and this one: nobody waits, the session cools.
        if Arc::strong_count(&self.queue) == 2 && queues.remove(&self.key).is_some() {
            self.hot.hot_count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn turns_are_one_at_a_time_and_a_session_cools_when_none_waits() {
        let hot = Arc::new(HotSessions::default());
        let key = ClientKey::from_client_id("a");
        assert!(!hot.is_hot(&key));
        let first = hot.turn(key).await;
        assert!(hot.is_hot(&key));
        let waiting = tokio::spawn({
            let hot = Arc::clone(&hot);
            async move { hot.turn(key).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "the second waits for the first");
        drop(first);
        let second = waiting.await.unwrap();
        assert!(hot.is_hot(&key), "still hot while a turn is held");
        drop(second);
        assert!(!hot.is_hot(&key), "cool once no one holds or waits");
        assert!(hot.queues.lock().is_empty());
        assert_eq!(hot.hot_count.load(Ordering::Relaxed), 0);
    }
}
