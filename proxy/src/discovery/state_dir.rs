//! The state directory (`--state-dir`): the last good config on disk, so that a
//! proxy (re)started while the control plane is unreachable still routes.
//!
//! After each applied push the proxy writes every resource it accepted, with its
//! version, to a temporary file and renames it over `config.pb`: a crash mid-write
//! leaves the previous file whole. On start the file is read back and every resource
//! validated again exactly as a push would be; a file that cannot be read or parsed is
//! reported and ignored (the proxy then waits for the control plane as without one).
//!
//! The file is a magic header followed by length-delimited `DiscoveryResponse`s, one
//! per resource type: the same messages the stream carries, so nothing new to version.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use prost::Message;
use weft_proto::v1;

use super::Resources;
use crate::state::{ConfigSource, Shared};

const FILE: &str = "config.pb";
const MAGIC: &[u8; 8] = b"WEFTCFG1";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a Weft state file (corrupt, or written by another program)")]
    NotStateFile { path: PathBuf },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// The last good config loaded from the state directory.
pub struct Loaded {
    pub resources: Resources,
    /// Resources in the file that no longer validate (reported, left out).
    pub rejected: Vec<v1::ResourceError>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Loads `--state-dir`'s last good config into the snapshot, stale until the control
/// plane has been heard; returns what it holds (empty without a usable file), for the
/// first Hello.
pub fn restore(shared: &Shared) -> Resources {
    let Some(dir) = &shared.config.state_dir else {
        return Resources::default();
    };
    let loaded = match load(dir) {
        Ok(Some(loaded)) => loaded,
        Ok(None) => {
            tracing::info!(dir = %dir.display(), "no saved config in the state directory yet");
            return Resources::default();
        }
        Err(e) => {
            tracing::error!(error = %e, "ignoring the state directory's saved config");
            metrics::counter!("weft_config_state_errors_total", "operation" => "load").increment(1);
            return Resources::default();
        }
    };
    for rejected in &loaded.rejected {
        tracing::warn!(name = %rejected.name, version = rejected.version, message = %rejected.message, "a saved resource no longer validates; left out");
    }
    let resources = loaded.resources;
    shared.snapshot.send_replace(Arc::new(resources.snapshot()));
    if let Some(view) = resources.trust_bundle() {
        shared
            .identity
            .set_trust_bundle(Arc::new(view.bundle.clone()));
    }
    shared.set_source(ConfigSource::StateDir);
    shared.configured.store(true, Ordering::Release);
    tracing::warn!(
        path = %path(dir).display(),
        resources = resources.known().len(),
        "serving the saved config from the state directory: it is STALE until the control plane answers"
    );
    resources
}

/// Reads the state file; `Ok(None)` when there is none yet.
pub fn load(dir: &Path) -> Result<Option<Loaded>, StateError> {
    let path = path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path, source }),
    };
    decode(&bytes).map(Some).map_err(|e| e.at(path))
}

/// Writes the state file atomically: a temporary file, flushed, renamed over the
/// old one. Blocking: run it off the async threads.
pub fn save(dir: &Path, resources: &Resources) -> Result<(), StateError> {
    let path = path(dir);
    let temporary = dir.join(format!("{FILE}.tmp"));
    let failed = |source| StateError::Write {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(&encode(resources)).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, &path).map_err(failed)?;
    // The rename is durable once the directory is synced; a failure here only
    // risks the previous version after a power loss.
    if let Ok(directory) = std::fs::File::open(dir) {
        let _ = directory.sync_all();
    }
    Ok(())
}

fn encode(resources: &Resources) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    for push in resources.pushes() {
        // Writing into a Vec cannot run out of room.
        let _ = push.encode_length_delimited(&mut bytes);
    }
    bytes
}

/// A decoding failure before the file's path is known.
enum DecodeError {
    NotStateFile,
    Corrupt(String),
}

impl DecodeError {
    fn at(self, path: PathBuf) -> StateError {
        match self {
            DecodeError::NotStateFile => StateError::NotStateFile { path },
            DecodeError::Corrupt(reason) => StateError::Corrupt { path, reason },
        }
    }
}

fn decode(bytes: &[u8]) -> Result<Loaded, DecodeError> {
    let Some(mut rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
        return Err(DecodeError::NotStateFile);
    };
    let mut resources = Resources::default();
    let mut rejected = Vec::new();
    while !rest.is_empty() {
        let push = v1::DiscoveryResponse::decode_length_delimited(&mut rest)
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        rejected.extend(resources.apply(&push));
    }
    Ok(Loaded {
        resources,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_proto::resource::{to_any, Kind};

    fn held() -> Resources {
        let service = v1::Service {
            namespace: "shop".into(),
            name: "web".into(),
            ports: vec![v1::ServicePort {
                name: String::new(),
                port: 80,
                protocol: "http1".into(),
            }],
            ..Default::default()
        };
        let endpoints = v1::Endpoints {
            namespace: "shop".into(),
            name: "web".into(),
            endpoints: vec![v1::Endpoint {
                address: "10.0.0.1".into(),
                port: 8080,
                ..Default::default()
            }],
        };
        let mut resources = Resources::default();
        for (kind, body, version) in [
            (Kind::Service, to_any(Kind::Service, &service), 7),
            (Kind::Endpoints, to_any(Kind::Endpoints, &endpoints), 9),
        ] {
            resources.apply(&v1::DiscoveryResponse {
                nonce: "1".into(),
                type_url: kind.type_url().into(),
                resources: vec![v1::Resource {
                    name: "shop/web".into(),
                    version,
                    body: Some(body),
                }],
                removed: vec![],
                more: false,
            });
        }
        resources
    }

    #[test]
    fn saved_config_loads_back_with_its_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).expect("no file is fine").is_none());
        let resources = held();
        save(dir.path(), &resources).expect("save");
        let loaded = load(dir.path()).expect("load").expect("a file");
        assert!(loaded.rejected.is_empty());
        let mut known = loaded.resources.known();
        known.sort_by(|a, b| a.type_url.cmp(&b.type_url));
        let mut expected = resources.known();
        expected.sort_by(|a, b| a.type_url.cmp(&b.type_url));
        assert_eq!(known, expected);
        assert_eq!(loaded.resources.max_version(Kind::Endpoints), 9);
        assert!(!dir.path().join("config.pb.tmp").exists());
    }

    #[test]
    fn corrupt_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(path(dir.path()), b"not a state file").expect("write");
        let error = load(dir.path()).err().expect("rejected");
        assert!(
            error.to_string().contains("not a Weft state file"),
            "{error}"
        );

        let mut truncated = encode(&held());
        truncated.truncate(truncated.len() - 5);
        std::fs::write(path(dir.path()), &truncated).expect("write");
        let error = load(dir.path()).err().expect("rejected");
        assert!(error.to_string().contains("corrupt"), "{error}");

        let mut flipped = encode(&held());
        for byte in flipped.iter_mut().skip(MAGIC.len() + 1) {
            *byte ^= 0x5a;
        }
        std::fs::write(path(dir.path()), &flipped).expect("write");
        // Either undecodable or decoded into resources that fail validation.
        match load(dir.path()) {
            Err(_) => {}
            Ok(Some(loaded)) => assert!(loaded.resources.known().len() < 2),
            Ok(None) => panic!("the file exists"),
        }
    }
}
