//! Registered server processes as `instances/<id>.json`, each rewritten at its heartbeat.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{FsStore, Inner, io};
use crate::{Error, Instance, InstanceId, InstanceStore, NodeIdentity, Result, timestamp};

/// A registration expired this long ago is removed by the next listing: nothing needs it
/// any more, and the directory must not grow with every restart.
const PRUNE_AFTER: Duration = Duration::from_secs(60 * 60);

impl Inner {
    fn instance_path(&self, id: &InstanceId) -> PathBuf {
        self.root.join("instances").join(format!("{id}.json"))
    }

    /// The live and recently expired registrations; older ones are removed on the way, so
    /// the directory does not grow with every start (registration prunes too).
    fn prune_instances(&self) -> Result<Vec<Instance>> {
        let dir = self.root.join("instances");
        let now = timestamp::now();
        let mut instances = Vec::new();
        for name in io::list_names(&dir, ".json")? {
            let Some(instance) = io::read_json_lenient::<Instance>(&dir.join(&name)) else {
                continue;
            };
            if now - instance.until > PRUNE_AFTER {
                io::remove_file(&dir.join(&name))?;
                continue;
            }
            instances.push(instance);
        }
        Ok(instances)
    }
}

#[async_trait]
impl InstanceStore for FsStore {
    async fn register(
        &self,
        id: InstanceId,
        host: &str,
        pid: u32,
        node: &NodeIdentity,
        address: Option<&str>,
        until: OffsetDateTime,
    ) -> Result<Instance> {
        let (host, node, address) = (host.to_owned(), node.clone(), address.map(str::to_owned));
        self.blocking(move |s| {
            // Registrations are ordered by the registry's lock, so that two processes
            // registering at once see each other.
            io::with_lock(&s.root.join("instances.lock"), || {
                let now = timestamp::now();
                node.check_unique(&id, &s.prune_instances()?, now)?;
                let instance =
                    Instance::registered(id, &host, pid, &node, address.as_deref(), now, until);
                io::write_json(&s.instance_path(&instance.id), &instance)?;
                Ok(instance)
            })
        })
        .await
    }

    async fn heartbeat(&self, id: &InstanceId, until: OffsetDateTime) -> Result<Instance> {
        let id = *id;
        self.blocking(move |s| {
            // Under the registry's lock: a lapsed registration is checked against the names
            // registered meanwhile, as a new one would be.
            io::with_lock(&s.root.join("instances.lock"), || {
                let path = s.instance_path(&id);
                let mut instance: Instance =
                    io::read_json(&path)?.ok_or_else(|| Error::not_found("instance", id))?;
                let now = timestamp::now();
                if !instance.live_at(now) {
                    instance.check_renewal(&s.prune_instances()?, now)?;
                }
                instance.heartbeat_at = now;
                instance.until = until;
                io::write_json(&path, &instance)?;
                Ok(instance)
            })
        })
        .await
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        self.blocking(|s| s.prune_instances()).await
    }

    async fn deregister(&self, id: &InstanceId) -> Result<()> {
        let id = *id;
        self.blocking(move |s| io::remove_file(&s.instance_path(&id)).map(drop)).await
    }
}
