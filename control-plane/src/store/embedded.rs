//! The embedded store: one redb file under `--data-dir`. Nothing to install, crash-safe
//! (redb commits are atomic and durable), and enough for a single control plane.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;
use weft_proto::resource::Kind;

use super::{Contents, Outcome, Record, Registration, Store, StoreError, Write};

/// Key: `<kind>/<namespace>/<name>`; value: 8-byte little-endian version + body.
const RESOURCES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("resources");
/// Key: node id; value: 8-byte little-endian version + encoded workload.
const REGISTRATIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("registrations");
/// Key: node id; value: the registration's generation. A table of its own, so that a
/// store written before generations existed reads as it was: a registration without
/// one has its version as generation (the revision that last wrote it).
const GENERATIONS: TableDefinition<'_, &str, u64> = TableDefinition::new("generations");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
/// Key: secret key (`ca`, `token/<id>`); value: the secret's bytes.
const SECRETS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("secrets");
const REVISION: &str = "revision";
/// The last generation handed out to a registration.
const GENERATION: &str = "generation";

pub struct EmbeddedStore {
    db: Arc<Database>,
    revision: watch::Sender<u64>,
}

impl EmbeddedStore {
    /// Opens (or creates) `weft.redb` in `dir`.
    pub fn open(dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Unavailable(format!("create {}: {e}", dir.display())))?;
        let path = dir.join("weft.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Unavailable(format!("open {}: {e}", path.display())))?;
        // Create the tables so that readers never meet a missing one.
        let txn = db.begin_write().map_err(unavailable)?;
        let revision = {
            txn.open_table(RESOURCES).map_err(unavailable)?;
            txn.open_table(REGISTRATIONS).map_err(unavailable)?;
            txn.open_table(GENERATIONS).map_err(unavailable)?;
            txn.open_table(SECRETS).map_err(unavailable)?;
            let meta = txn.open_table(META).map_err(unavailable)?;
            let revision = meta.get(REVISION).map_err(unavailable)?.map(|v| v.value());
            revision.unwrap_or(0)
        };
        txn.commit().map_err(unavailable)?;
        Ok(EmbeddedStore {
            db: Arc::new(db),
            revision: watch::channel(revision).0,
        })
    }

    /// Runs blocking redb work off the async workers.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    fn published(&self, revision: Option<u64>) {
        if let Some(revision) = revision {
            self.revision.send_if_modified(|current| {
                let newer = revision > *current;
                if newer {
                    *current = revision;
                }
                newer
            });
        }
    }

    /// Writes a registration as a new claim, or, with `expected`, only while the
    /// stored one is at that generation. Returns the new generation.
    async fn write_registration(
        &self,
        node_id: &str,
        workload: Vec<u8>,
        expected: Option<u64>,
    ) -> Result<Option<u64>, StoreError> {
        let node_id = node_id.to_owned();
        let (generation, revision) = self
            .blocking(move |db| {
                let mut txn = db.begin_write().map_err(unavailable)?;
                let stored = stored_registration(&txn, &node_id, &workload)?;
                if expected.is_some() && expected != stored.map(|s| s.generation) {
                    txn.abort().map_err(unavailable)?;
                    return Ok((None, None));
                }
                let generation = next_generation(&txn)?;
                let revision = match stored {
                    // Only the claim changes (a reconnect): no view sees it, so no new
                    // revision, and the commit does not wait for the disk (~10 ms
                    // each, which a thousand proxies reconnecting at once would wait
                    // for in turn). A crash may lose it, and with it every stream and
                    // timer that knew its generation; the generation counter then
                    // resumes from the last durable one, above every stored generation.
                    Some(stored) if stored.same_workload => {
                        txn.set_durability(Durability::None).map_err(unavailable)?;
                        None
                    }
                    _ => {
                        let revision = next_revision(&txn)?;
                        let mut table = txn.open_table(REGISTRATIONS).map_err(unavailable)?;
                        table
                            .insert(node_id.as_str(), encode(revision, &workload).as_slice())
                            .map_err(unavailable)?;
                        set_revision(&txn, revision)?;
                        Some(revision)
                    }
                };
                {
                    let mut generations = txn.open_table(GENERATIONS).map_err(unavailable)?;
                    generations
                        .insert(node_id.as_str(), generation)
                        .map_err(unavailable)?;
                    let mut meta = txn.open_table(META).map_err(unavailable)?;
                    meta.insert(GENERATION, generation).map_err(unavailable)?;
                }
                txn.commit().map_err(unavailable)?;
                Ok((Some(generation), revision))
            })
            .await?;
        self.published(revision);
        Ok(generation)
    }

    /// Removes one key; a removal is a change, so it takes a new revision.
    async fn remove(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: String,
    ) -> Result<Option<u64>, StoreError> {
        let revision = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(unavailable)?;
                let revision = next_revision(&txn)?;
                let existed = {
                    let mut table = txn.open_table(table).map_err(unavailable)?;
                    let removed = table.remove(key.as_str()).map_err(unavailable)?;
                    removed.is_some()
                };
                if !existed {
                    txn.abort().map_err(unavailable)?;
                    return Ok(None);
                }
                set_revision(&txn, revision)?;
                txn.commit().map_err(unavailable)?;
                Ok(Some(revision))
            })
            .await?;
        self.published(revision);
        Ok(revision)
    }
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn key(kind: Kind, name: &str) -> String {
    format!("{}/{name}", kind.as_str())
}

fn encode(version: u64, body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + body.len());
    value.extend_from_slice(&version.to_le_bytes());
    value.extend_from_slice(body);
    value
}

fn decode(value: &[u8]) -> Result<(u64, &[u8]), StoreError> {
    let (version, body) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Corrupt("value shorter than its version".into()))?;
    Ok((u64::from_le_bytes(*version), body))
}

fn record_from(key: &str, value: &[u8]) -> Result<Record, StoreError> {
    let (kind, name) = key
        .split_once('/')
        .ok_or_else(|| StoreError::Corrupt(format!("bad key {key:?}")))?;
    let kind =
        Kind::parse(kind).ok_or_else(|| StoreError::Corrupt(format!("bad kind in {key:?}")))?;
    let (version, body) = decode(value)?;
    Ok(Record {
        kind,
        name: name.to_owned(),
        version,
        body: body.to_vec(),
    })
}

/// What a write transaction finds stored for a node before it writes a registration.
#[derive(Clone, Copy)]
struct Stored {
    generation: u64,
    /// The stored workload is byte-identical to the one about to be written.
    same_workload: bool,
}

fn stored_registration(
    txn: &redb::WriteTransaction,
    node_id: &str,
    workload: &[u8],
) -> Result<Option<Stored>, StoreError> {
    let table = txn.open_table(REGISTRATIONS).map_err(unavailable)?;
    let Some(value) = table.get(node_id).map_err(unavailable)? else {
        return Ok(None);
    };
    let (version, body) = decode(value.value())?;
    let generations = txn.open_table(GENERATIONS).map_err(unavailable)?;
    let generation = generations.get(node_id).map_err(unavailable)?;
    Ok(Some(Stored {
        generation: generation.map_or(version, |g| g.value()),
        same_workload: body == workload,
    }))
}

/// The next generation of a registration. Generations count apart from revisions (a
/// claim of unchanged bytes moves no revision) and start from the revision of the
/// store they were introduced to, above the generations its registrations read with.
fn next_generation(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(unavailable)?;
    let current = match meta.get(GENERATION).map_err(unavailable)? {
        Some(generation) => generation.value(),
        None => meta
            .get(REVISION)
            .map_err(unavailable)?
            .map_or(0, |v| v.value()),
    };
    Ok(current + 1)
}

/// Reads the revision inside a write transaction and returns the next one.
fn next_revision(txn: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(META).map_err(unavailable)?;
    let current = meta.get(REVISION).map_err(unavailable)?.map(|v| v.value());
    Ok(current.unwrap_or(0) + 1)
}

fn set_revision(txn: &redb::WriteTransaction, revision: u64) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(unavailable)?;
    meta.insert(REVISION, revision).map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn apply(&self, writes: Vec<Write>) -> Result<Vec<(Outcome, u64)>, StoreError> {
        let (results, revision) = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(unavailable)?;
                let revision = next_revision(&txn)?;
                let mut results = Vec::with_capacity(writes.len());
                let mut changed = false;
                {
                    let mut table = txn.open_table(RESOURCES).map_err(unavailable)?;
                    for write in &writes {
                        let key = key(write.kind, &write.name);
                        let existing = match table.get(key.as_str()).map_err(unavailable)? {
                            Some(value) => {
                                let (version, body) = decode(value.value())?;
                                Some((version, body == write.body.as_slice()))
                            }
                            None => None,
                        };
                        let result = match existing {
                            Some((version, true)) => (Outcome::Unchanged, version),
                            Some((_, false)) => (Outcome::Updated, revision),
                            None => (Outcome::Created, revision),
                        };
                        if result.0 != Outcome::Unchanged {
                            table
                                .insert(key.as_str(), encode(revision, &write.body).as_slice())
                                .map_err(unavailable)?;
                            changed = true;
                        }
                        results.push(result);
                    }
                }
                if changed {
                    set_revision(&txn, revision)?;
                    txn.commit().map_err(unavailable)?;
                    Ok((results, Some(revision)))
                } else {
                    txn.abort().map_err(unavailable)?;
                    Ok((results, None))
                }
            })
            .await?;
        self.published(revision);
        Ok(results)
    }

    async fn delete(&self, kind: Kind, name: &str) -> Result<Option<u64>, StoreError> {
        self.remove(RESOURCES, key(kind, name)).await
    }

    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Record>, StoreError> {
        let key = key(kind, name);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(RESOURCES).map_err(unavailable)?;
            let value = table.get(key.as_str()).map_err(unavailable)?;
            value.map(|v| record_from(&key, v.value())).transpose()
        })
        .await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Record>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(RESOURCES).map_err(unavailable)?;
            // '0' sorts right after '/', so this is every key with the kind's prefix.
            let start = format!("{}/", kind.as_str());
            let end = format!("{}0", kind.as_str());
            let mut records = Vec::new();
            for entry in table
                .range(start.as_str()..end.as_str())
                .map_err(unavailable)?
            {
                let (key, value) = entry.map_err(unavailable)?;
                records.push(record_from(key.value(), value.value())?);
            }
            Ok(records)
        })
        .await
    }

    async fn register(&self, node_id: &str, workload: Vec<u8>) -> Result<u64, StoreError> {
        let generation = self.write_registration(node_id, workload, None).await?;
        generation
            .ok_or_else(|| StoreError::Unavailable("an unconditional claim was refused".into()))
    }

    async fn reregister(
        &self,
        node_id: &str,
        workload: Vec<u8>,
        generation: u64,
    ) -> Result<Option<u64>, StoreError> {
        self.write_registration(node_id, workload, Some(generation))
            .await
    }

    async fn deregister(&self, node_id: &str, generation: u64) -> Result<Option<u64>, StoreError> {
        let node_id = node_id.to_owned();
        let removed = self
            .blocking(move |db| {
                let txn = db.begin_write().map_err(unavailable)?;
                let stored = stored_registration(&txn, &node_id, &[])?;
                if stored.map(|s| s.generation) != Some(generation) {
                    txn.abort().map_err(unavailable)?;
                    return Ok(None);
                }
                let revision = next_revision(&txn)?;
                {
                    let mut table = txn.open_table(REGISTRATIONS).map_err(unavailable)?;
                    table.remove(node_id.as_str()).map_err(unavailable)?;
                    let mut generations = txn.open_table(GENERATIONS).map_err(unavailable)?;
                    generations.remove(node_id.as_str()).map_err(unavailable)?;
                }
                set_revision(&txn, revision)?;
                txn.commit().map_err(unavailable)?;
                Ok(Some(revision))
            })
            .await?;
        self.published(removed);
        Ok(removed)
    }

    async fn contents(&self) -> Result<Contents, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let meta = txn.open_table(META).map_err(unavailable)?;
            let revision = meta
                .get(REVISION)
                .map_err(unavailable)?
                .map(|v| v.value())
                .unwrap_or(0);
            let mut records = Vec::new();
            let resources = txn.open_table(RESOURCES).map_err(unavailable)?;
            for entry in resources.iter().map_err(unavailable)? {
                let (key, value) = entry.map_err(unavailable)?;
                records.push(record_from(key.value(), value.value())?);
            }
            let mut registrations = Vec::new();
            let table = txn.open_table(REGISTRATIONS).map_err(unavailable)?;
            let generations = txn.open_table(GENERATIONS).map_err(unavailable)?;
            for entry in table.iter().map_err(unavailable)? {
                let (key, value) = entry.map_err(unavailable)?;
                let (version, workload) = decode(value.value())?;
                let generation = generations.get(key.value()).map_err(unavailable)?;
                registrations.push(Registration {
                    node_id: key.value().to_owned(),
                    version,
                    generation: generation.map_or(version, |g| g.value()),
                    workload: workload.to_vec(),
                });
            }
            Ok(Contents {
                revision,
                records,
                registrations,
            })
        })
        .await
    }

    fn revision(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    async fn get_secret(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SECRETS).map_err(unavailable)?;
            let value = table.get(key.as_str()).map_err(unavailable)?;
            Ok(value.map(|v| v.value().to_vec()))
        })
        .await
    }

    async fn put_secret(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            {
                let mut table = txn.open_table(SECRETS).map_err(unavailable)?;
                table
                    .insert(key.as_str(), value.as_slice())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)
        })
        .await
    }

    async fn create_secret(&self, key: &str, value: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(unavailable)?;
            let existing = {
                let table = txn.open_table(SECRETS).map_err(unavailable)?;
                let existing = table.get(key.as_str()).map_err(unavailable)?;
                existing.map(|v| v.value().to_vec())
            };
            if let Some(existing) = existing {
                txn.abort().map_err(unavailable)?;
                return Ok(existing);
            }
            {
                let mut table = txn.open_table(SECRETS).map_err(unavailable)?;
                table
                    .insert(key.as_str(), value.as_slice())
                    .map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
            Ok(value)
        })
        .await
    }

    async fn list_secrets(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = prefix.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(unavailable)?;
            let table = txn.open_table(SECRETS).map_err(unavailable)?;
            let mut secrets = Vec::new();
            for entry in table.range(prefix.as_str()..).map_err(unavailable)? {
                let (key, value) = entry.map_err(unavailable)?;
                if !key.value().starts_with(prefix.as_str()) {
                    break;
                }
                secrets.push((key.value().to_owned(), value.value().to_vec()));
            }
            Ok(secrets)
        })
        .await
    }
}
