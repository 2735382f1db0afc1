//! Ownership of work by lease: who holds an inbox claim or a running run, and until when.
//!
//! Orbit never asks "is this process alive": process ids repeat, a server in a container is
//! PID 1 at every start, and two nodes do not share them. Instead every server process
//! registers an [`Instance`] with a heartbeat, and every piece of work it takes carries a
//! [`Lease`]: the instance that holds it, a fencing [`LeaseToken`] and an expiry that the
//! holder renews while the work lives. Whoever finds a lease expired may take the work back;
//! taking it issues a new token, so the old holder, should it wake up, can no longer settle
//! it (every settling operation names the token it holds and is refused without a match).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{AgentName, InstanceId, LeaseToken, PendingApproval, Result, SessionId};

/// A holder's right to a piece of work until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Lease {
    /// The server process that holds the work.
    pub instance: InstanceId,
    /// Fresh whenever the work changes hands; settling the work needs it.
    pub token: LeaseToken,
    /// The work may be taken back after this moment unless the holder renews it.
    #[serde(with = "crate::timestamp::rfc3339")]
    pub until: OffsetDateTime,
}

impl Lease {
    /// A new lease with a fresh token.
    pub fn new(instance: InstanceId, until: OffsetDateTime) -> Self {
        Self { instance, token: LeaseToken::new(), until }
    }

    /// Whether the lease has lapsed at `now`.
    pub fn expired_at(&self, now: OffsetDateTime) -> bool {
        self.until <= now
    }
}

/// One registered server process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub id: InstanceId,
    /// For people reading the registry: where it runs. Nothing depends on it.
    pub host: String,
    /// For people reading the registry. Nothing depends on it: pids repeat.
    pub pid: u32,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub heartbeat_at: OffsetDateTime,
    /// The instance counts as gone after this moment unless it beats again.
    #[serde(with = "crate::timestamp::rfc3339")]
    pub until: OffsetDateTime,
    /// The node it is (absent from registrations made before nodes were named in them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeIdentity>,
    /// Where the other nodes reach its API (`http://host:port`, `--advertise-url`), to forward
    /// a watcher of a turn it runs; absent when it has none (it listens on every address and
    /// was given none, or registered before nodes said where they are reached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Instance {
    /// A registration made at `now` of process `pid` on `host` as `node`, reached at
    /// `address`, alive until `until`: what every store writes when it registers one.
    pub fn registered(
        id: InstanceId,
        host: &str,
        pid: u32,
        node: &NodeIdentity,
        address: Option<&str>,
        now: OffsetDateTime,
        until: OffsetDateTime,
    ) -> Self {
        Self {
            id,
            host: host.to_owned(),
            pid,
            started_at: now,
            heartbeat_at: now,
            until,
            node: Some(node.clone()),
            address: address.map(str::to_owned),
        }
    }

    /// Whether it counts as running at `now`: its heartbeat has not lapsed.
    pub fn live_at(&self, now: OffsetDateTime) -> bool {
        self.until > now
    }

    /// Refuses (`Conflict`) to renew this registration once it lapsed and, meanwhile, a
    /// live instance of another data directory took its node's name: the name is that
    /// node's now, and this process must stop rather than run on under it. A live
    /// registration renews unchecked, since no other directory could register the name
    /// while it was live.
    pub fn check_renewal(&self, registered: &[Instance], now: OffsetDateTime) -> Result<()> {
        match &self.node {
            Some(node) if !self.live_at(now) => node.check_unique(&self.id, registered, now),
            _ => Ok(()),
        }
    }
}

/// Which node a server process is: the node's name (`--node-name`, kept in the data
/// directory) and the random id of the data directory it runs on. Processes on one data
/// directory share both; two data directories under one name are two nodes claiming one
/// name, and the work pinned to that name (git worktrees on one disk) would be taken by
/// both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeIdentity {
    pub name: String,
    pub data_dir: String,
}

impl NodeIdentity {
    /// Refuses (`Conflict`) to register instance `id` as this node while another instance
    /// registered in `registered` and live at `now` has this node's name on another data
    /// directory. Every store checks it under the lock that orders registrations.
    pub fn check_unique(
        &self,
        id: &InstanceId,
        registered: &[Instance],
        now: OffsetDateTime,
    ) -> Result<()> {
        let taken = registered.iter().find(|other| {
            other.id != *id
                && other.live_at(now)
                && other
                    .node
                    .as_ref()
                    .is_some_and(|node| node.name == self.name && node.data_dir != self.data_dir)
        });
        match taken {
            Some(other) => Err(crate::Error::Conflict(format!(
                "node name '{}' is taken: instance {} (host '{}', pid {}) runs under it on another data directory",
                self.name, other.id, other.host, other.pid
            ))),
            None => Ok(()),
        }
    }
}

impl Instance {
    /// How a person asking node `asking` is told where it runs: by its node's name, or by
    /// its id, pid and host when the name says nothing to them (a registration that names
    /// none, or a process of the asking node itself: processes on one data directory share
    /// its name).
    pub fn described_to(&self, asking: &str) -> String {
        match &self.node {
            Some(node) if !node.name.is_empty() && node.name != asking => {
                format!("node '{}'", node.name)
            }
            _ => format!("instance {} (pid {}) on host '{}'", self.id, self.pid, self.host),
        }
    }
}

/// The registry of server processes sharing one store.
#[async_trait]
pub trait InstanceStore: Send + Sync {
    /// Registers this process under `id` (fresh for every start) as `node`, reached by the
    /// other nodes at `address` (none when it cannot say), alive until `until`. `Conflict`
    /// while a live instance has the node's name on another data directory
    /// ([`NodeIdentity::check_unique`], checked and written as one step).
    async fn register(
        &self,
        id: InstanceId,
        host: &str,
        pid: u32,
        node: &NodeIdentity,
        address: Option<&str>,
        until: OffsetDateTime,
    ) -> Result<Instance>;
    /// Renews the registration. `NotFound` when it was removed (deregistered, or pruned by
    /// another instance long after it expired): the caller should register again, under
    /// the same check. `Conflict` when it lapsed and another data directory's live instance
    /// has taken its node's name meanwhile ([`Instance::check_renewal`], checked and written
    /// as one step under the lock that orders registrations): the process has lost its name
    /// and must stop.
    async fn heartbeat(&self, id: &InstanceId, until: OffsetDateTime) -> Result<Instance>;
    /// Every registration, expired ones included (pruned a while after they expire).
    async fn list(&self) -> Result<Vec<Instance>>;
    /// Removes the registration at a clean stop.
    async fn deregister(&self, id: &InstanceId) -> Result<()>;
    /// What time it is by the store's own clock, for stores that have one apart from this
    /// process's (a database server, on another machine perhaps): the leases every node
    /// writes and judges must agree with it, so a node checks its clock against it. `None`
    /// for a store that shares this process's clock (files, memory).
    async fn clock(&self) -> Result<Option<OffsetDateTime>> {
        Ok(None)
    }
    /// Tells every other server process sharing the store about work one of them may be
    /// doing (a turn to abort, a session or agent that is gone). At most once and not
    /// kept: a process that is not listening at that moment never hears it, so nothing may
    /// depend on it alone for correctness. By default there is nobody to tell.
    async fn signal(&self, _signal: Signal) -> Result<()> {
        Ok(())
    }
    /// The signals of every process sharing the store (this one's own included), from now
    /// on; `None` when the store carries none.
    fn watch_signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        None
    }
    /// Tells every other server process sharing the store of this one's news (`orbit-agent`'s
    /// activity in its compact node-to-node form, each item opaque to the store): what it
    /// announced since it last relayed, in order, in as few messages as the store can. The
    /// others hear it in the order relayed ([`InstanceStore::watch_activity`]). At most once,
    /// like a signal. By default there is nobody to tell.
    async fn relay(&self, _from: InstanceId, _news: Vec<serde_json::Value>) -> Result<()> {
        Ok(())
    }
    /// The news every process sharing the store relays (this one's own included), apart from
    /// the signals ([`InstanceStore::watch_signals`]) so that a flood of it never crowds a
    /// control signal out, and [`Relayed::Lost`] where some may have been lost on the way;
    /// `None` when the store carries none.
    fn watch_activity(&self) -> Option<tokio::sync::broadcast::Receiver<Relayed>> {
        None
    }
    /// Keeps a copy of a tool call that waits for a person in a turn of `approval.instance`,
    /// so that every process sharing the store lists it (`shared_approvals`), until it is
    /// withdrawn. Sharing one again replaces it. By default nothing is kept: a store that
    /// no other node shares lists nothing, and each process lists the calls it holds.
    async fn share_approval(&self, _approval: &PendingApproval) -> Result<()> {
        Ok(())
    }
    /// Withdraws the copy of `request_id` shared by `instance`, once its wait ended; nothing
    /// when there is none.
    async fn withdraw_approval(&self, _instance: &InstanceId, _request_id: &str) -> Result<()> {
        Ok(())
    }
    /// Withdraws every copy `instance` shared before `before` but `waiting` (the calls it
    /// holds) does not name: those a failed withdrawal left behind. Called with each heartbeat.
    async fn keep_approvals(
        &self,
        _instance: &InstanceId,
        _waiting: &[String],
        _before: OffsetDateTime,
    ) -> Result<()> {
        Ok(())
    }
    /// The tool calls shared by every instance alive at `now` (its registration not lapsed)
    /// and not expired at `now`, oldest first; `None` when the store shares none (by default), so that each process
    /// lists only its own.
    async fn shared_approvals(&self, _now: OffsetDateTime) -> Result<Option<Vec<PendingApproval>>> {
        Ok(None)
    }
}

/// What a process hears of the news the others relay ([`InstanceStore::watch_activity`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Relayed {
    /// Items process `from` relayed, in its order ([`InstanceStore::relay`]).
    News { from: InstanceId, news: Vec<serde_json::Value> },
    /// Some news relayed meanwhile may never reach this process: its connection listening
    /// for news was lost and is made again (or the store could not read what it was told).
    Lost,
}

/// A word from one server process to the others that share its store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    /// The process that sent it.
    pub from: InstanceId,
    pub what: SignalKind,
}

/// What a [`Signal`] says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum SignalKind {
    /// The agent was deleted: whoever runs a turn of it ends it and forgets its CLI state.
    AgentDeleted { agent: AgentName },
    /// The session was deleted: the same for its turn and CLI state.
    SessionDeleted { agent: AgentName, session: SessionId },
    /// Abort the session's running turn, the one of the hold `hold` (the token
    /// [`crate::SessionStore::request_turn_abort`] answered), so that an abort meant for one
    /// turn never stops the session's next; whoever aborts it answers [`SignalKind::Done`]
    /// with the same `request`. A signal without `hold` (from a node of an older version)
    /// aborts whatever turn of the session runs.
    AbortTurn {
        agent: AgentName,
        session: SessionId,
        request: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hold: Option<crate::LeaseToken>,
    },
    /// Answer a permission request of the session's running turn; whoever answers it says
    /// [`SignalKind::Done`] with the same `request`.
    AnswerPermission {
        agent: AgentName,
        session: SessionId,
        permission: String,
        allow: bool,
        message: Option<String>,
        request: String,
    },
    /// The answer to a request: the node running the turn did what it asked.
    Done { request: String },
    /// News of what happened on the sending node, for the event streams of the others:
    /// `orbit-agent`'s activity in its compact node-to-node form, which the store carries
    /// without reading; an array of items from [`InstanceStore::relay`] (one item, not in an
    /// array, from a node of an older version). Nobody answers it.
    Activity { news: serde_json::Value },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_described_by_its_node_or_else_its_id_pid_and_host() {
        let now = crate::timestamp::now();
        let mut instance = Instance {
            id: InstanceId::new(),
            host: "box".into(),
            pid: 7,
            started_at: now,
            heartbeat_at: now,
            until: now,
            node: None,
            address: None,
        };
        let by_id = format!("instance {} (pid 7) on host 'box'", instance.id);
        assert_eq!(instance.described_to("worker-b"), by_id);
        instance.node = Some(NodeIdentity { name: "worker-a".into(), data_dir: "dir-1".into() });
        assert_eq!(instance.described_to("worker-b"), "node 'worker-a'");
        assert_eq!(instance.described_to("worker-a"), by_id, "a sibling process of the asker");
    }
}
