//! Registered server processes as `instances/<id>.json`, each rewritten at its heartbeat.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{FsStore, Inner, io};
use crate::{Error, Instance, InstanceId, InstanceStore, Result, timestamp};

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
        node: &str,
        pid: u32,
        until: OffsetDateTime,
    ) -> Result<Instance> {
        let (host, node) = (host.to_owned(), node.to_owned());
        self.blocking(move |s| {
            let now = timestamp::now();
            let instance =
                Instance { id, host, node, pid, started_at: now, heartbeat_at: now, until };
            io::write_json(&s.instance_path(&instance.id), &instance)?;
            s.prune_instances()?;
            Ok(instance)
        })
        .await
    }

    async fn heartbeat(&self, id: &InstanceId, until: OffsetDateTime) -> Result<Instance> {
        let id = *id;
        self.blocking(move |s| {
            let path = s.instance_path(&id);
            // Only this instance writes its record, so the read and the write need no lock;
            // a record pruned meanwhile is recreated by a new registration, not here.
            let mut instance: Instance =
                io::read_json(&path)?.ok_or_else(|| Error::not_found("instance", id))?;
            instance.heartbeat_at = timestamp::now();
            instance.until = until;
            io::write_json(&path, &instance)?;
            Ok(instance)
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
