//! What several nodes on one store tell each other about the turns they run: a session or an
//! agent deleted through one node ends its turns and forgets its CLI state on every node, and
//! an abort or a permission answer given to a node that does not run the turn reaches the
//! node that does, which says it did.
//!
//! Signals travel through the store (`InstanceStore::signal`, PostgreSQL's `NOTIFY`); a store
//! shared by no other node carries none, and then everything here is local. A signal is never
//! the only safeguard: a node that missed a deletion finds the session's record gone at its
//! turn's next write, and an abort is also recorded against the turn's hold, which the node
//! running it reads at its next renewal.

use std::time::Duration;

use orbit_store::{AgentName, Relayed, SessionId, Signal, SignalKind};
use tokio::sync::broadcast::error::RecvError;

use crate::{AgentPool, Error, Result};

/// How long a request to the other nodes (an abort, a permission answer) waits for the one
/// running the turn to say it did it (a notification crosses in milliseconds; this allows
/// for a busy node).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

impl AgentPool {
    /// Aborts the session's running turn, on this node or on whichever node of the store runs
    /// it. `NotRunning` when no turn of the session runs anywhere.
    ///
    /// Another node's turn is asked twice: the request is recorded against the turn's hold
    /// (`SessionStore::request_turn_abort`), which the holder reads at its next renewal (a
    /// third of a lease), and a signal asks it at once. The record is what makes the abort
    /// certain, so a live hold is enough for success; the signal's answer is awaited only so
    /// that the usual abort has happened by the time the caller hears of it.
    pub async fn abort_turn(&self, agent: &AgentName, session: &SessionId) -> Result<()> {
        if self.find(agent, session).is_some_and(|local| local.abort().is_ok()) {
            return Ok(());
        }
        let now = orbit_store::timestamp::now();
        let Some(hold) = self.stores().sessions.request_turn_abort(agent, session, now).await?
        else {
            return Err(Error::NotRunning(session.to_string()));
        };
        let ask = |request| SignalKind::AbortTurn {
            agent: agent.clone(),
            session: *session,
            request,
            hold: Some(hold),
        };
        if !self.ask_other_nodes(ask).await? {
            tracing::info!(%agent, %session, "no node answered the abort; the node holding the turn aborts it at its next renewal");
        }
        Ok(())
    }

    /// Answers a permission request of the session's running turn, on this node or on the
    /// node that runs it. `PermissionNotPending` when no node has it pending.
    pub async fn answer_permission(
        &self,
        agent: &AgentName,
        session: &SessionId,
        permission: &str,
        allow: bool,
        message: Option<String>,
    ) -> Result<()> {
        if let Some(local) = self.find(agent, session) {
            match local.answer_permission(permission, allow, message.clone()) {
                Err(Error::PermissionNotPending(_)) => {}
                answered => return answered,
            }
        }
        let ask = |request| SignalKind::AnswerPermission {
            agent: agent.clone(),
            session: *session,
            permission: permission.to_owned(),
            allow,
            message: message.clone(),
            request,
        };
        if self.ask_other_nodes(ask).await? {
            Ok(())
        } else {
            Err(Error::PermissionNotPending(permission.to_owned()))
        }
    }

    /// Asks the other nodes of the store, and waits for the one that did it to say so:
    /// whether one did in time. `false` at once on a store that carries no signals.
    async fn ask_other_nodes(&self, ask: impl FnOnce(String) -> SignalKind) -> Result<bool> {
        let instances = &self.stores().instances;
        // Listening before asking, so that a quick answer is not missed.
        let Some(mut answers) = instances.watch_signals() else { return Ok(false) };
        let request = orbit_store::new_ulid().to_string();
        instances.signal(Signal { from: self.instance(), what: ask(request.clone()) }).await?;
        let answered = async {
            loop {
                match answers.recv().await {
                    Ok(Signal { what: SignalKind::Done { request: done }, .. })
                        if done == request =>
                    {
                        return true;
                    }
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return false,
                }
            }
        };
        Ok(tokio::time::timeout(ANSWER_WAIT, answered).await.unwrap_or(false))
    }

    /// Tells the other nodes of the store; best effort, since each would find out anyway.
    pub(crate) async fn tell_other_nodes(&self, what: SignalKind) {
        let signal = Signal { from: self.instance(), what };
        if let Err(err) = self.stores().instances.signal(signal.clone()).await {
            tracing::warn!(error = %err, ?signal, "could not tell the other nodes");
        }
    }

    /// Acts on the other nodes' signals until `shutdown` resolves; `None` when the store
    /// carries no signals.
    pub fn spawn_signal_listener(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut signals = self.stores().instances.watch_signals()?;
        // Relayed activity on a receiver of its own where the store keeps one apart.
        let mut activity = self.stores().instances.watch_activity();
        let pool = self.clone();
        Some(tokio::spawn(async move {
            tokio::pin!(shutdown);
            loop {
                let signal = tokio::select! {
                    signal = signals.recv() => signal,
                    Some(news) = next_news(activity.as_mut()) => {
                        match news {
                            Ok(Relayed::News { from, news }) if from != pool.instance() => {
                                pool.hear_news(news);
                            }
                            Ok(Relayed::News { .. }) => {}
                            Ok(Relayed::Lost) => pool.activity().announce_news_lost(),
                            // Dropped for a full queue: this node's clients miss some.
                            Err(RecvError::Lagged(missed)) => {
                                tracing::warn!(missed, "missed other nodes' activity");
                                pool.activity().announce_news_lost();
                            }
                            Err(RecvError::Closed) => activity = None,
                        }
                        continue;
                    },
                    () = &mut shutdown => return,
                };
                match signal {
                    Ok(signal) if signal.from != pool.instance() => pool.obey(signal.what),
                    Ok(_) => {}
                    Err(RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "missed other nodes' signals");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }))
    }

    /// Acts on one signal of another node. Ending a turn waits for it to settle, so each
    /// runs on its own and the next signal is not held up.
    fn obey(&self, what: SignalKind) {
        let pool = self.clone();
        match what {
            SignalKind::AgentDeleted { agent } => {
                tokio::spawn(async move {
                    tracing::info!(%agent, "agent deleted through another node");
                    pool.forget_agent(&agent).await;
                });
            }
            SignalKind::SessionDeleted { agent, session } => {
                tokio::spawn(async move {
                    tracing::info!(%agent, %session, "session deleted through another node");
                    pool.forget_session(&agent, &session).await;
                });
            }
            SignalKind::AbortTurn { agent, session, request, hold } => {
                let Some(local) = self.find(&agent, &session) else { return };
                let aborted = match hold {
                    // Only the turn the request was recorded against: by the time the signal
                    // arrives that turn may have ended and the session's next begun.
                    Some(hold) => local.abort_held(&hold),
                    None => local.abort(),
                };
                if aborted.is_err() {
                    if local.is_running() {
                        tracing::info!(%agent, %session, "an abort meant for an earlier turn of the session leaves its running turn alone");
                    }
                    return;
                }
                tracing::info!(%agent, %session, "turn aborted through another node");
                tokio::spawn(
                    async move { pool.tell_other_nodes(SignalKind::Done { request }).await },
                );
            }
            SignalKind::AnswerPermission {
                agent,
                session,
                permission,
                allow,
                message,
                request,
            } => {
                let Some(local) = self.find(&agent, &session) else { return };
                if local.answer_permission(&permission, allow, message).is_err() {
                    return;
                }
                tracing::info!(%agent, %session, %permission, allow, "permission answered through another node");
                tokio::spawn(
                    async move { pool.tell_other_nodes(SignalKind::Done { request }).await },
                );
            }
            SignalKind::Activity { news } => self.hear_news(crate::relay::items(news)),
            SignalKind::Done { .. } => {}
        }
    }
}

/// The next relayed activity of a receiver kept apart, or `None` at once without one (so
/// that its branch of a `select!` is disabled).
async fn next_news(
    activity: Option<&mut tokio::sync::broadcast::Receiver<Relayed>>,
) -> Option<Result<Relayed, RecvError>> {
    Some(activity?.recv().await)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use async_trait::async_trait;
    use orbit_store::{Instance, InstanceId, InstanceStore, MemStore, NodeIdentity, Stores};
    use serde_json::json;
    use time::OffsetDateTime;
    use tokio::sync::broadcast;

    use super::*;
    use crate::activity::{Activity, Next};
    use crate::claude::{ClaudeCli, ClaudeCliConfig};
    use crate::{AgentPool, PoolOptions};

    /// A store whose signals and news the test sends by hand (no news heard without
    /// `news`), whose first relay fails when `fail` says so (the database away for a moment),
    /// and which keeps what it relays after that.
    struct Relaying {
        inner: Arc<dyn InstanceStore>,
        signals: broadcast::Sender<Signal>,
        news: Option<broadcast::Sender<Relayed>>,
        fail: std::sync::atomic::AtomicBool,
        sent: std::sync::Mutex<Vec<Vec<serde_json::Value>>>,
    }

    #[async_trait]
    impl InstanceStore for Relaying {
        async fn register(
            &self,
            id: InstanceId,
            host: &str,
            pid: u32,
            node: &NodeIdentity,
            address: Option<&str>,
            until: OffsetDateTime,
        ) -> orbit_store::Result<Instance> {
            self.inner.register(id, host, pid, node, address, until).await
        }
        async fn heartbeat(
            &self,
            id: &InstanceId,
            until: OffsetDateTime,
        ) -> orbit_store::Result<Instance> {
            self.inner.heartbeat(id, until).await
        }
        async fn list(&self) -> orbit_store::Result<Vec<Instance>> {
            self.inner.list().await
        }
        async fn deregister(&self, id: &InstanceId) -> orbit_store::Result<()> {
            self.inner.deregister(id).await
        }
        fn watch_signals(&self) -> Option<broadcast::Receiver<Signal>> {
            Some(self.signals.subscribe())
        }
        fn watch_activity(&self) -> Option<broadcast::Receiver<Relayed>> {
            self.news.as_ref().map(broadcast::Sender::subscribe)
        }
        async fn relay(
            &self,
            _from: InstanceId,
            news: Vec<serde_json::Value>,
        ) -> orbit_store::Result<()> {
            if self.fail.swap(false, std::sync::atomic::Ordering::SeqCst) {
                return Err(orbit_store::Error::Unavailable("away".into()));
            }
            self.sent.lock().unwrap().push(news);
            Ok(())
        }
    }

    /// A pool on memory stores whose instance store is a [`Relaying`] hearing `news` (none
    /// without it), its first relay failing when `fail` says so.
    fn relaying_pool(
        news: Option<broadcast::Sender<Relayed>>,
        fail: bool,
    ) -> (Arc<Relaying>, AgentPool) {
        let memory = MemStore::new(std::env::temp_dir()).stores();
        let relaying = Arc::new(Relaying {
            inner: memory.instances.clone(),
            signals: broadcast::channel(8).0,
            news,
            fail: std::sync::atomic::AtomicBool::new(fail),
            sent: std::sync::Mutex::new(Vec::new()),
        });
        let stores = Stores { instances: relaying.clone(), ..memory };
        let runtime = ClaudeCli::new(ClaudeCliConfig {
            bin: "claude".into(),
            config_dir: std::env::temp_dir(),
            user_config_dir: None,
            env: Vec::new(),
            max_turns: None,
        });
        let pool = AgentPool::new(stores, Arc::new(runtime), PoolOptions::default());
        (relaying, pool)
    }

    fn changed(name: &str) -> serde_json::Value {
        json!({"at": "2026-12-01T15:00:00Z", "activity": {"type": "agentChanged", "agent": name}})
    }

    /// What the bus says next, as the agent's name of a change or `lost`.
    async fn next(reader: &mut crate::activity::Subscription) -> String {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), reader.next()).await;
        match next.unwrap() {
            Next::Event(announced) => match &announced.activity {
                Activity::AgentChanged { agent } if announced.relayed => agent.to_string(),
                other => panic!("{other:?}"),
            },
            Next::NewsLost => "lost".into(),
            other => panic!("{other:?}"),
        }
    }

    /// News lost anywhere on its way to this node (the store's queue overflowed, the store's
    /// listening was lost, the sender missed some) is announced in its place, and the rest is
    /// heard in order; this node's own news, heard back, is not announced again.
    #[tokio::test]
    async fn news_lost_on_the_way_is_announced_in_its_place() {
        let news = broadcast::channel(2).0;
        let (_relaying, pool) = relaying_pool(Some(news.clone()), false);
        let mut reader = pool.activity().subscribe(None);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listener = pool.spawn_signal_listener(async move { drop(stopped.await) }).unwrap();
        let other = InstanceId::new();
        let from_other = |news| Relayed::News { from: other, news };
        // Three before the listener reads, with room for two: the first is dropped.
        for name in ["a", "b", "c"] {
            news.send(from_other(vec![changed(name)])).unwrap();
        }
        for expected in ["lost", "b", "c"] {
            assert_eq!(next(&mut reader).await, expected);
        }
        news.send(Relayed::Lost).unwrap();
        assert_eq!(next(&mut reader).await, "lost");
        let own = Relayed::News { from: pool.instance(), news: vec![changed("mine")] };
        news.send(own).unwrap();
        news.send(from_other(vec![json!({"lost": true}), changed("d")])).unwrap();
        for expected in ["lost", "d"] {
            assert_eq!(next(&mut reader).await, expected);
        }
        stop.send(()).unwrap();
        listener.await.unwrap();
    }

    /// A relay that failed is told to the other nodes without waiting for this node's next
    /// announcement, which may take hours.
    #[tokio::test]
    async fn a_failed_relays_marker_is_sent_without_a_new_announcement() {
        let (failing, pool) = relaying_pool(None, true);
        let relay = pool.spawn_activity_relay(std::future::pending()).unwrap();
        pool.activity().announce(Activity::AgentChanged {
            agent: orbit_store::AgentName::parse("a").unwrap(),
        });
        // The marker's first retry is due after a second; ten give it ample room.
        let mut sent = Vec::new();
        for _ in 0..200 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            sent = failing.sent.lock().unwrap().clone();
            if !sent.is_empty() {
                break;
            }
        }
        relay.abort();
        assert_eq!(
            sent,
            [vec![serde_json::json!({"lost": true})]],
            "with no new announcement the other nodes are told of the loss, alone"
        );
    }
}
