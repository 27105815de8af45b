//! Pieces of the admin listings that both containers build the same way.

use crate::{
    ClientKey, ContainerStats, ExpiryPolicy, SessionSummary, engine::records::SessionRecord,
};

/// The summary of a stored session at `now`.
pub(crate) fn summary(
    client: &ClientKey,
    record: &SessionRecord,
    bytes: u64,
    policy: &ExpiryPolicy,
    now: u64,
) -> SessionSummary {
    SessionSummary {
        key: *client,
        created: record.created,
        last_access: record.last_access,
        principal: record.principal.clone(),
        bytes,
        expired: policy.is_expired(record.created, record.last_access, now),
    }
}

/// Accumulates [`ContainerStats`] one session at a time.
#[derive(Debug)]
pub(crate) struct StatsBuilder {
    stats: ContainerStats,
    policy: ExpiryPolicy,
    now: u64,
}

impl StatsBuilder {
    pub(crate) fn new(policy: ExpiryPolicy, now: u64) -> Self {
        StatsBuilder {
            stats: ContainerStats::default(),
            policy,
            now,
        }
    }

    pub(crate) fn add_session(&mut self, record: &SessionRecord) {
        self.stats.sessions += 1;
        if self
            .policy
            .is_expired(record.created, record.last_access, self.now)
        {
            self.stats.expired += 1;
        } else {
            self.stats
                .ages
                .push(self.now.saturating_sub(record.created));
            self.stats
                .idle
                .push(self.now.saturating_sub(record.last_access));
        }
    }

    pub(crate) fn add_value_bytes(&mut self, bytes: u64) {
        self.stats.value_bytes += bytes;
    }

    pub(crate) fn finish(mut self, file_bytes: Option<u64>) -> ContainerStats {
        self.stats.file_bytes = file_bytes;
        self.stats
    }
}
