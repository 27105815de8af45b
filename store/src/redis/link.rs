//! What a container talks to: one Redis or a Redis Cluster, and the
//! connections it keeps to it, one per tokio runtime that uses it.
//!
//! Why one per runtime: a multiplexed connection is driven by a task on the
//! runtime that opened it. A request served on the app's runtime that used a
//! connection driven on the container's own runtime would cross threads
//! twice per command (measured: ~0.2 voluntary context switches per request
//! against 0.05 for a client on the caller's runtime, and a core left idle);
//! a connection of the caller's runtime keeps the command on the worker that
//! serves the request.

use std::time::Duration;

use redis::{
    Cmd, Pipeline, RedisFuture, Value,
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::ClusterClient,
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};
use tokio::runtime::{Handle, Id};

use crate::StoreError;

/// Connections kept for runtimes that are gone before they are replaced.
const RUNTIMES_KEPT: usize = 4;

/// The server(s) a container was given.
pub(crate) enum Target {
    /// `redis://HOST:PORT[/DB]`.
    Single(redis::Client),
    /// `redis+cluster://HOST:PORT[,HOST:PORT...]`: any nodes of the cluster;
    /// the client learns the rest.
    Cluster(ClusterClient),
}

impl Target {
    /// Parse `url`; also answers the name errors give it (no password).
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a malformed URL.
    pub(crate) fn parse(
        url: &str,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<(Target, String), StoreError> {
        let invalid = |reason: String| StoreError::InvalidInput {
            what: "Redis URL",
            reason,
        };
        if let Some(rest) = url.strip_prefix("redis+cluster://") {
            // NOTE: userinfo, if any, is given with the first node only and
            // applies to all (the client requires them to agree).
            let (userinfo, hosts) = match rest.rsplit_once('@') {
                Some((userinfo, hosts)) => (Some(userinfo), hosts),
                None => (None, rest),
            };
            let hosts = hosts.trim_end_matches('/');
            if hosts.contains('/') || hosts.contains('?') {
                return Err(invalid(format!(
                    "{}: a Redis Cluster has one database, so no /DB (expected redis+cluster://HOST:PORT[,HOST:PORT...])",
                    redacted(url)
                )));
            }
            let nodes: Vec<String> = hosts
                .split(',')
                .map(|host| match userinfo {
                    Some(userinfo) => format!("redis://{userinfo}@{host}"),
                    None => format!("redis://{host}"),
                })
                .collect();
            if hosts.is_empty() || hosts.split(',').any(str::is_empty) {
                return Err(invalid(format!(
                    "{}: no node (expected redis+cluster://HOST:PORT[,HOST:PORT...])",
                    redacted(url)
                )));
            }
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(connect_timeout)
                .response_timeout(response_timeout)
                // NOTE: few, quick retries: a node that is down should give
                // the request a quick 503, not minutes of back-off; the next
                // request tries again.
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(200)
                .build()
                .map_err(|err| {
                    invalid(format!(
                        "{err} (expected redis+cluster://HOST:PORT[,HOST:PORT...])"
                    ))
                })?;
            let name = format!("redis+cluster://{hosts}");
            return Ok((Target::Cluster(client), name));
        }
        let client = redis::Client::open(url).map_err(|err| {
            invalid(format!(
                "{err} (expected redis://HOST:PORT[/DB] or redis+cluster://HOST:PORT[,HOST:PORT...])"
            ))
        })?;
        let info = client.get_connection_info();
        let name = format!("redis://{}/{}", info.addr, info.redis.db);
        Ok((Target::Single(client), name))
    }

    /// Open a connection, driven on the current runtime.
    async fn open(&self, config: &redis::AsyncConnectionConfig) -> redis::RedisResult<Link> {
        match self {
            Target::Single(client) => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Link::Single),
            Target::Cluster(client) => client.get_async_connection().await.map(Link::Cluster),
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster(_))
    }
}

/// `url` without its password.
fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, hosts)) => format!("{scheme}://***@{hosts}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// One connection: commands sent concurrently on it are pipelined.
#[derive(Clone)]
pub(crate) enum Link {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl Link {
    /// Send `command` to the primary that holds `key`'s slot (a keyless
    /// command such as WAIT must reach the node a script ran on).
    pub(crate) async fn on_node_of(
        &mut self,
        key: &str,
        command: &Cmd,
    ) -> redis::RedisResult<Value> {
        match self {
            Link::Single(connection) => command.query_async(connection).await,
            Link::Cluster(connection) => {
                let route = Route::new(slot_of(key.as_bytes()), SlotAddr::Master);
                connection
                    .route_command(
                        command,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await
            }
        }
    }
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Link::Single(connection) => connection.req_packed_command(cmd),
            Link::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Link::Single(connection) => connection.req_packed_commands(cmd, offset, count),
            Link::Cluster(connection) => connection.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(connection) => connection.get_db(),
            Link::Cluster(connection) => connection.get_db(),
        }
    }
}

/// The cluster slot of `key`: CRC16 (XMODEM) of its hash tag, mod 16384.
fn slot_of(key: &[u8]) -> u16 {
    let tag = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(tag) % 16384
}

/// The connections in use, one per runtime, each replaced by a fresh one
/// after it failed.
pub(crate) struct Links {
    target: Target,
    config: redis::AsyncConnectionConfig,
    connect_timeout: Duration,
    /// (runtime, connection), most recently opened last.
    open: parking_lot::Mutex<Vec<(Id, Link)>>,
}

impl Links {
    pub(crate) fn new(
        target: Target,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        Links {
            target,
            config: redis::AsyncConnectionConfig::new()
                .set_connection_timeout(connect_timeout)
                .set_response_timeout(response_timeout),
            connect_timeout,
            open: parking_lot::Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The current runtime's connection, or a fresh one. Must be called on
    /// a tokio runtime (every caller is an async fn run on one).
    ///
    /// # Errors
    /// `Err(None)` if no connection was made within the connect timeout,
    /// `Err(Some(err))` if Redis refused it.
    pub(crate) async fn get(&self) -> Result<Link, Option<redis::RedisError>> {
        let runtime = Handle::current().id();
        if let Some((_, link)) = self.open.lock().iter().find(|(id, _)| *id == runtime) {
            return Ok(link.clone());
        }
        let fresh = tokio::time::timeout(self.connect_timeout, self.target.open(&self.config))
            .await
            .map_err(|_| None)?
            .map_err(Some)?;
        let mut open = self.open.lock();
        open.retain(|(id, _)| *id != runtime);
        if open.len() >= RUNTIMES_KEPT {
            open.remove(0);
        }
        open.push((runtime, fresh.clone()));
        Ok(fresh)
    }

    /// Drop the current runtime's connection after it failed: the next
    /// command opens a fresh one.
    pub(crate) fn broken(&self) {
        if let Ok(handle) = Handle::try_current() {
            let runtime = handle.id();
            self.open.lock().retain(|(id, _)| *id != runtime);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Values from the Redis Cluster specification's examples
        // (CLUSTER KEYSLOT on Redis 7).
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"keel:{ab}:s:abcd"), slot_of(b"ab"));
        // An empty tag is no tag: the whole key counts.
        assert_eq!(
            slot_of(b"a{}b"),
            crc16::State::<crc16::XMODEM>::calculate(b"a{}b") % 16384
        );
    }

    #[test]
    fn cluster_urls_name_their_nodes_and_hide_passwords() {
        let timeout = Duration::from_secs(1);
        let (target, name) = Target::parse(
            "redis+cluster://127.0.0.1:7001,127.0.0.1:7002",
            timeout,
            timeout,
        )
        .unwrap();
        assert!(target.is_cluster());
        assert_eq!(name, "redis+cluster://127.0.0.1:7001,127.0.0.1:7002");
        let (_, name) =
            Target::parse("redis+cluster://:secret@10.0.0.1:7001", timeout, timeout).unwrap();
        assert!(!name.contains("secret"), "{name}");
        for bad in [
            "redis+cluster://",
            "redis+cluster://h:1,,h:2",
            "redis+cluster://h:1/2",
        ] {
            let err = Target::parse(bad, timeout, timeout).err().unwrap();
            assert!(
                err.to_string().contains("redis+cluster://HOST:PORT"),
                "{err}"
            );
        }
        let (target, name) = Target::parse("redis://127.0.0.1:6379/3", timeout, timeout).unwrap();
        assert!(!target.is_cluster());
        assert_eq!(name, "redis://127.0.0.1:6379/3");
    }
}
