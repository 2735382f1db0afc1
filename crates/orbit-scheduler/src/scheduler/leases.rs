//! Leases of running runs: renewing this process's, and recovering those of processes that
//! went away.
//!
//! A running run names the instance running it and carries a lease that instance renews
//! every third of `run_lease` while the run lives. A run whose lease lapsed is marked
//! interrupted by whoever finds it: at start-up, when a fire or a run-now meets it (the
//! store's `start_run` does it on the way), and at the lapse time of runs found at start-up
//! under another instance's lease, so that after a crash and restart they are recovered
//! within one lease, not at the task's next slot. A server that dies for good while others
//! run is noticed through the instance registry: when a registration lapses, the runs of
//! every task are looked at once (rare, so the full look is affordable), and the dead
//! server's runs are marked interrupted.

use std::collections::HashSet;
use std::time::Duration;

use orbit_store::{AgentName, ErrorKind, InstanceId, RunId, RunStatus, TaskId};
use tokio::sync::watch;

use super::{Later, Scheduler};

impl Scheduler {
    /// Renews the leases of this process's running runs until `stopped` says every run ended.
    pub(super) async fn renew_leases(&self, mut stopped: watch::Receiver<bool>) {
        let every = (self.inner.options.run_lease / 3).max(Duration::from_millis(10));
        let mut known_dead = HashSet::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stopped.changed() => break,
            }
            self.renew_running().await;
            self.sweep_after_dead_instances(&mut known_dead).await;
        }
    }

    /// Looks for runs to recover when a server's registration lapsed since the last look.
    async fn sweep_after_dead_instances(&self, known_dead: &mut HashSet<InstanceId>) {
        let Ok(instances) = self.inner.stores.instances.list().await else { return };
        let now = orbit_store::timestamp::now();
        let newly_dead: Vec<_> = instances
            .iter()
            .filter(|i| i.until < now && i.id != self.inner.options.instance)
            .filter(|i| known_dead.insert(i.id))
            .collect();
        if newly_dead.is_empty() {
            return;
        }
        for instance in &newly_dead {
            tracing::warn!(instance = %instance.id, host = %instance.host, "a server stopped beating; recovering its runs");
        }
        // A run's own lease may outlive its server's registration by a little; the re-checks
        // that `recover_runs` plans catch those at their lapse.
        self.recover_runs().await;
    }

    async fn renew_running(&self) {
        let held: Vec<_> = self
            .state()
            .running
            .values()
            .map(|a| (a.agent.clone(), a.task, a.run, a.token, a.cancel.clone()))
            .collect();
        let until = self.inner.clock.now() + self.inner.options.run_lease;
        for (agent, task, run, token, cancel) in held {
            match self.inner.stores.tasks.renew_run(&agent, &task, &run, &token, until).await {
                Ok(()) => {}
                Err(err) if err.kind() == ErrorKind::Conflict => {
                    // Another process found the lease lapsed and took the run back; this
                    // turn's outcome can no longer be recorded, and a new run may start.
                    tracing::warn!(%task, %run, "lost a run's lease; aborting its turn");
                    cancel.cancel();
                }
                Err(err) => {
                    tracing::warn!(%task, %run, error = %err, "could not renew a run's lease")
                }
            }
        }
    }

    /// Marks runs left running by processes that are gone as interrupted; plans a re-check of
    /// those still under another instance's live lease at its lapse time.
    pub(super) async fn recover_runs(&self) {
        let stores = &self.inner.stores;
        let running = match stores.tasks.running_runs().await {
            Ok(running) => running,
            Err(err) => {
                tracing::warn!(error = %err, "could not look for interrupted runs");
                return;
            }
        };
        for (agent, run) in running {
            self.recheck_run(&agent, &run.task_id, &run.id).await;
        }
    }

    /// Interrupts the run if its lease lapsed; otherwise looks again when it would lapse.
    pub(super) async fn recheck_run(&self, agent: &AgentName, task: &TaskId, run: &RunId) {
        let stores = &self.inner.stores;
        let now = self.inner.clock.now();
        match stores.tasks.interrupt_lapsed_run(agent, task, run, now).await {
            Ok(Some(interrupted)) => {
                tracing::warn!(%agent, %task, %run, "marked a run interrupted: its server went away");
                self.announce_run(&interrupted, agent);
            }
            Ok(None) => {
                if self.state().running.get(task).is_some_and(|active| active.run == *run) {
                    return;
                }
                // Still held: look again when the lease, as renewed now, would lapse.
                let Ok(Some(latest)) = stores.tasks.latest_run(agent, task).await else { return };
                if latest.id != *run || latest.status != RunStatus::Running {
                    return;
                }
                if let Some(lease) = latest.lease {
                    let at = lease.until.max(now + time::Duration::MILLISECOND);
                    let later = Later { at, agent: agent.clone(), task: *task, run: Some(*run) };
                    self.state().later.push(later);
                }
            }
            Err(err) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => tracing::warn!(%task, %run, error = %err, "could not check a run's lease"),
        }
    }
}
