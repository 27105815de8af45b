//! When sessions expire (zope.session's timeout and resolution, exactly), and
//! the clock that decides it.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

/// A source of the current time in Unix seconds. Injectable so tests control
/// expiry.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now, in whole Unix seconds.
    fn now(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        // A clock before 1970 is a misconfigured machine; 0 then keeps
        // sessions alive rather than panicking.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }
}

/// A clock that moves only when told to; clones share the time.
///
/// ```
/// use keel_store::{Clock, ManualClock};
/// let clock = ManualClock::new(1000);
/// clock.advance(60);
/// assert_eq!(clock.now(), 1060);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: u64) -> Self {
        ManualClock(Arc::new(AtomicU64::new(now)))
    }

    /// Move the clock forward by `seconds`.
    pub fn advance(&self, seconds: u64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    /// Set the clock to `now`.
    pub fn set(&self, now: u64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How long sessions live: zope.session's `timeout` and `resolution`, plus an
/// optional absolute lifetime.
///
/// - Touch rule: on access, the stored last-access time `L` is rewritten to
///   `now` only when `L + resolution < now`, so read traffic rarely writes.
/// - A session is expired when `now > L + timeout + resolution`, or when
///   `now > created + absolute_lifetime`. `timeout` 0 means never (by
///   inactivity).
///
/// ```
/// use keel_store::ExpiryPolicy;
/// let policy = ExpiryPolicy::default().with_timeout(100).with_resolution(10);
/// assert!(!policy.is_expired(0, 2000, 2110));
/// assert!(policy.is_expired(0, 2000, 2111));
/// assert!(!policy.needs_touch(1000, 1010));
/// assert!(policy.needs_touch(1000, 1011));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    timeout: u64,
    resolution: u64,
    absolute_lifetime: Option<u64>,
}

impl Default for ExpiryPolicy {
    /// zope.session's persistent container: timeout 3600 s, resolution 600 s.
    fn default() -> Self {
        ExpiryPolicy {
            timeout: 3600,
            resolution: 600,
            absolute_lifetime: None,
        }
    }
}

impl ExpiryPolicy {
    /// zope.session's RAM container: timeout 3600 s, resolution 300 s.
    pub fn ram_default() -> Self {
        ExpiryPolicy {
            resolution: 300,
            ..Self::default()
        }
    }

    /// Inactivity timeout in seconds; 0 = sessions never expire by inactivity.
    pub fn with_timeout(mut self, seconds: u64) -> Self {
        self.timeout = seconds;
        self
    }

    /// Granularity of last-access updates in seconds.
    pub fn with_resolution(mut self, seconds: u64) -> Self {
        self.resolution = seconds;
        self
    }

    /// Expire sessions this many seconds after creation, however active.
    pub fn with_absolute_lifetime(mut self, seconds: Option<u64>) -> Self {
        self.absolute_lifetime = seconds;
        self
    }

    /// The inactivity timeout, seconds (0 = never).
    pub fn timeout(&self) -> u64 {
        self.timeout
    }

    /// The resolution, seconds.
    pub fn resolution(&self) -> u64 {
        self.resolution
    }

    /// The absolute lifetime, seconds, if any.
    pub fn absolute_lifetime(&self) -> Option<u64> {
        self.absolute_lifetime
    }

    /// Whether an access at `now` rewrites a last-access time of `last_access`.
    pub fn needs_touch(&self, last_access: u64, now: u64) -> bool {
        self.timeout != 0 && last_access.saturating_add(self.resolution) < now
    }

    /// Whether a session created at `created` and last accessed at
    /// `last_access` has expired at `now`.
    pub fn is_expired(&self, created: u64, last_access: u64, now: u64) -> bool {
        let idle = self.timeout != 0
            && now
                > last_access
                    .saturating_add(self.timeout)
                    .saturating_add(self.resolution);
        let too_old = self
            .absolute_lifetime
            .is_some_and(|lifetime| now > created.saturating_add(lifetime));
        idle || too_old
    }

    /// The first second at which a session created at `created` and last
    /// accessed at `last_access` counts as expired if nobody uses it
    /// meanwhile; `None` if it never expires (timeout 0, no lifetime).
    ///
    /// ```
    /// use keel_store::ExpiryPolicy;
    /// let policy = ExpiryPolicy::default().with_timeout(3600).with_resolution(600);
    /// let at = policy.expires_at(1000, 2000).unwrap();
    /// assert!(!policy.is_expired(1000, 2000, at - 1) && policy.is_expired(1000, 2000, at));
    /// ```
    pub fn expires_at(&self, created: u64, last_access: u64) -> Option<u64> {
        let idle = (self.timeout != 0).then(|| {
            last_access
                .saturating_add(self.timeout)
                .saturating_add(self.resolution)
                .saturating_add(1)
        });
        let old = self
            .absolute_lifetime
            .map(|lifetime| created.saturating_add(lifetime).saturating_add(1));
        match (idle, old) {
            (Some(idle), Some(old)) => Some(idle.min(old)),
            (idle, old) => idle.or(old),
        }
    }

    /// Sessions whose last access is before this second are expired by
    /// inactivity at `now` (`None` if none can be: timeout 0).
    pub fn idle_cutoff(&self, now: u64) -> Option<u64> {
        (self.timeout != 0).then(|| {
            now.saturating_sub(self.timeout)
                .saturating_sub(self.resolution)
        })
    }

    /// Sessions created before this second are expired by age at `now`.
    pub fn age_cutoff(&self, now: u64) -> Option<u64> {
        self.absolute_lifetime
            .map(|lifetime| now.saturating_sub(lifetime))
    }
}
