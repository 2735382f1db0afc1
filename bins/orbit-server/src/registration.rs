//! This process in the store's registry: its registration, and the heartbeat that renews
//! it, checks this clock against the store's and withdraws stray copies of waiting calls.

use std::time::Duration;

use orbit_agent::AgentPool;
use orbit_store::{InstanceId, NodeIdentity, Stores};
use tokio_util::sync::CancellationToken;

use crate::clock::Verdict;

/// How old a shared copy of a tool call no turn holds must be before a heartbeat withdraws it.
const STRAY_APPROVAL_AGE: Duration = Duration::from_secs(5);

/// How often a running node checks its clock against the store's at least (more often with a
/// lease under a minute: every third of it), so that a node with a long lease notices a
/// clock that jumped within seconds, not a third of its lease later.
const CLOCK_CHECK_EVERY: Duration = Duration::from_secs(20);

/// What this process registers in the store's registry: who it is and where it is reached.
#[derive(Clone)]
pub(crate) struct Registration {
    pub(crate) instance: InstanceId,
    pub(crate) identity: NodeIdentity,
    /// Where the other nodes reach this one (`--advertise-url`, else `http://` and the bound
    /// address when it is one address).
    pub(crate) address: Option<String>,
}

impl Registration {
    /// Registers this process, alive for a lease.
    pub(crate) async fn register(
        &self,
        stores: &Stores,
        lease: Duration,
    ) -> orbit_store::Result<()> {
        let until = orbit_store::timestamp::now() + lease;
        let (host, pid) = (hostname(), std::process::id());
        let (identity, address) = (&self.identity, self.address.as_deref());
        let registered =
            stores.instances.register(self.instance, &host, pid, identity, address, until);
        registered.await.map(drop)
    }
}

/// Why the heartbeat stopped the node.
pub(crate) enum HeartbeatStop {
    /// Its registration lapsed and another data directory's node took its name meanwhile.
    NameLost(orbit_store::Error),
    /// Its clock is off the database's by more than `bound`, beyond doubt.
    ClockOff { reading: crate::clock::Reading, bound: Duration },
}

/// Renews this instance's registration at a third of the lease, checks this clock against
/// the store's, and withdraws the copies of waiting tool calls it shared that no turn of it
/// holds any more (a withdrawal that failed while the database was away), until told to
/// stop, or until the registration is refused because its node's name is another node's
/// now, or the clock is off: then it answers why, and the node must stop.
pub(crate) async fn heartbeat(
    pool: AgentPool,
    registration: Registration,
    lease: Duration,
    stop: CancellationToken,
) -> Option<HeartbeatStop> {
    let stores = pool.stores().clone();
    let instance = registration.instance;
    let bound = crate::clock::max_offset(lease);
    // The clock is checked on a task of its own, beside the renewals: a slow reading never
    // delays a renewal, and a renewal never cuts a slow reading short (a reading that ends,
    // however late, still stops a node whose clock it shows off beyond doubt). One check
    // runs at a time, started every `clock_every`.
    let clock_every = (lease / 3).min(CLOCK_CHECK_EVERY);
    let mut clock_check: Option<tokio::task::JoinHandle<ClockChecked>> = None;
    let mut next_beat = tokio::time::Instant::now() + lease / 3;
    let mut next_clock = tokio::time::Instant::now() + clock_every;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next_beat) => {}
            () = stop.cancelled() => {
                if let Some(check) = clock_check.take() {
                    check.abort();
                }
                return None;
            }
            () = tokio::time::sleep_until(next_clock), if clock_check.is_none() => {
                next_clock = tokio::time::Instant::now() + clock_every;
                let instances = stores.instances.clone();
                clock_check = Some(tokio::spawn(async move {
                    crate::clock::check(instances.as_ref(), bound).await
                }));
                continue;
            }
            checked = async {
                match clock_check.as_mut() {
                    Some(check) => check.await,
                    None => std::future::pending().await,
                }
            }, if clock_check.is_some() => {
                clock_check = None;
                if let Some(reading) = clock_off(checked, bound) {
                    return Some(HeartbeatStop::ClockOff { reading, bound });
                }
                continue;
            }
        }
        next_beat = tokio::time::Instant::now() + lease / 3;
        let until = orbit_store::timestamp::now() + lease;
        let renewed = match stores.instances.heartbeat(&instance, until).await {
            // Pruned by another server while this one was suspended: register again, under
            // the same check as at the start.
            Err(err) if err.kind() == orbit_store::ErrorKind::NotFound => {
                let registered = registration.register(&stores, lease).await;
                // The pruning took this instance's shared copies of waiting calls with it.
                if registered.is_ok() {
                    for approval in pool.local_pending_approvals() {
                        if let Err(err) = stores.instances.share_approval(&approval).await {
                            tracing::warn!(error = %err, "could not share a waiting call again");
                        }
                    }
                }
                registered
            }
            renewed => renewed.map(drop),
        };
        match renewed {
            Ok(()) => {}
            // Lapsed, and another data directory's node took the name meanwhile.
            Err(err) if err.kind() == orbit_store::ErrorKind::Conflict => {
                return Some(HeartbeatStop::NameLost(err));
            }
            Err(err) => {
                tracing::warn!(error = %err, "could not renew this instance's registration")
            }
        }
        // A call made just now may be held but not yet in the list read below: only copies
        // older than a few seconds go.
        let before = orbit_store::timestamp::now() - STRAY_APPROVAL_AGE;
        let waiting: Vec<String> =
            pool.local_pending_approvals().into_iter().map(|a| a.request_id).collect();
        if let Err(err) = stores.instances.keep_approvals(&instance, &waiting, before).await {
            tracing::warn!(error = %err, "could not withdraw stray copies of settled tool calls");
        }
    }
}

/// What one check of the clock gave: its task's outcome, then the store's.
type ClockChecked = orbit_store::Result<Option<(crate::clock::Reading, Verdict)>>;

/// The reading that shows this clock off the store's beyond doubt, if the check gave one;
/// anything else (agrees, unsure, the store or the task failed) is logged and let be.
///
/// The first reading beyond doubt stops the node: a reading counts only when its round trip
/// cannot turn it, so it is a fact about the clock, not noise, and waiting for another would
/// let the node judge leases by that clock for longer, past the margin the bound leaves. A
/// reading too slow to tell only warns: a slow database is not a wrong clock.
fn clock_off(
    checked: Result<ClockChecked, tokio::task::JoinError>,
    bound: Duration,
) -> Option<crate::clock::Reading> {
    match checked {
        Ok(Ok(Some((reading, Verdict::Differs)))) => Some(reading),
        Ok(Ok(Some((reading, Verdict::Unsure)))) => {
            tracing::warn!(
                clock = %reading.describe(),
                bound_ms = bound.as_millis(),
                "cannot tell whether this clock agrees with the database's: its answers are too slow"
            );
            None
        }
        Ok(Ok(_)) => None,
        Ok(Err(err)) => {
            tracing::warn!(error = %err, "could not read the database's clock");
            None
        }
        Err(err) => {
            tracing::warn!(error = %err, "the clock check ended without an answer");
            None
        }
    }
}

/// This machine's name, for people reading the instance registry.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}
