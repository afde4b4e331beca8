//! A pod's volumes as directories on the host: projected service-account tokens (minted
//! with the TokenRequest API, bound to the Pod, re-minted at 80% of their lifetime as
//! the kubelet does), ConfigMaps, Secrets, the downward API and emptyDirs.
//!
//! Files are written to a temporary name and renamed, so a process never reads half a
//! rotated token. Modes are the kubelet's defaults, for containers of any user
//! (securityContext.runAsUser): files 0644 and directories 0755, emptyDirs 0777.

use std::collections::BTreeMap;
use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, KeyToPath, Pod, Secret, ServiceAccount, Volume,
};
use kube::api::PostParams;
use kube::{Api, Client};

/// A token file the kubelet keeps fresh.
#[derive(Debug, Clone)]
pub struct TokenFile {
    pub path: PathBuf,
    pub audience: Option<String>,
    pub expiration_seconds: i64,
    pub refresh_at: Instant,
}

/// What `materialize` made: each volume's host directory, and the tokens to rotate.
#[derive(Debug, Default)]
pub struct Volumes {
    pub dirs: BTreeMap<String, PathBuf>,
    pub tokens: Vec<TokenFile>,
}

/// Writes every volume of `pod` under `dir/volumes/<name>`.
pub async fn materialize(client: &Client, pod: &Pod, pod_ip: &str, dir: &Path) -> Result<Volumes> {
    let mut volumes = Volumes::default();
    let spec = pod.spec.as_ref().context("pod without spec")?;
    for volume in spec.volumes.iter().flatten() {
        let vdir = dir.join("volumes").join(&volume.name);
        create_dirs(&vdir)?;
        if volume.empty_dir.is_some() {
            // Any user may write an emptyDir, as the kubelet makes them.
            std::fs::set_permissions(&vdir, Permissions::from_mode(0o777))?;
        }
        fill(client, pod, pod_ip, volume, &vdir, &mut volumes.tokens)
            .await
            .with_context(|| format!("volume {}", volume.name))?;
        volumes.dirs.insert(volume.name.clone(), vdir);
    }
    Ok(volumes)
}

async fn fill(
    client: &Client,
    pod: &Pod,
    pod_ip: &str,
    volume: &Volume,
    vdir: &Path,
    tokens: &mut Vec<TokenFile>,
) -> Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    if volume.empty_dir.is_some() {
        return Ok(());
    }
    if let Some(source) = &volume.config_map {
        let optional = source.optional.unwrap_or(false);
        let at = (namespace, source.name.as_str());
        return keyed(client, Keyed::ConfigMap, at, &source.items, optional, vdir).await;
    }
    if let Some(source) = &volume.secret {
        let name = source
            .secret_name
            .as_deref()
            .context("secret volume without secretName")?;
        let optional = source.optional.unwrap_or(false);
        return keyed(
            client,
            Keyed::Secret,
            (namespace, name),
            &source.items,
            optional,
            vdir,
        )
        .await;
    }
    if let Some(source) = &volume.downward_api {
        return downward(pod, pod_ip, &source.items, vdir);
    }
    if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                let mut file = TokenFile {
                    path: vdir.join(&token.path),
                    audience: token.audience.clone().filter(|a| !a.is_empty()),
                    expiration_seconds: token.expiration_seconds.unwrap_or(3600),
                    refresh_at: Instant::now(),
                };
                refresh_token(client, pod, &mut file).await?;
                tokens.push(file);
            }
            if let Some(cm) = &source.config_map {
                let optional = cm.optional.unwrap_or(false);
                let at = (namespace, cm.name.as_str());
                keyed(client, Keyed::ConfigMap, at, &cm.items, optional, vdir).await?;
            }
            if let Some(s) = &source.secret {
                let optional = s.optional.unwrap_or(false);
                let at = (namespace, s.name.as_str());
                keyed(client, Keyed::Secret, at, &s.items, optional, vdir).await?;
            }
            if let Some(d) = &source.downward_api {
                downward(pod, pod_ip, &d.items, vdir)?;
            }
        }
        return Ok(());
    }
    bail!("unsupported volume type (the played kubelet knows emptyDir, configMap, secret, downwardAPI, projected)")
}

/// Mints a token bound to the Pod with the TokenRequest API and writes it; the next
/// refresh is due at 80% of its lifetime.
pub async fn refresh_token(client: &Client, pod: &Pod, file: &mut TokenFile) -> Result<()> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.as_ref().context("pod without spec")?;
    let account = spec.service_account_name.as_deref().unwrap_or("default");
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: file.audience.clone().map(|a| vec![a]),
            expiration_seconds: Some(file.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for serviceaccount {namespace}/{account}"))?;
    let status = issued
        .status
        .context("TokenRequest answered without status")?;
    let token = status
        .token
        .context("TokenRequest answered without a token")?;
    write_atomic(&file.path, token.as_bytes())?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let expires = status
        .expiration_timestamp
        .map_or(now + file.expiration_seconds, |t| t.0.as_second());
    let lifetime = (expires - now).max(0) as u64;
    file.refresh_at = Instant::now() + Duration::from_secs(lifetime * 8 / 10);
    Ok(())
}

/// The two kinds of object whose keys become files.
#[derive(Debug, Clone, Copy)]
enum Keyed {
    ConfigMap,
    Secret,
}

/// Writes a ConfigMap's or Secret's keys (`items`, or all of them); a missing object
/// is an error unless the volume says it is optional.
async fn keyed(
    client: &Client,
    kind: Keyed,
    (namespace, name): (&str, &str),
    items: &Option<Vec<KeyToPath>>,
    optional: bool,
    vdir: &Path,
) -> Result<()> {
    let data: Option<BTreeMap<String, Vec<u8>>> = match kind {
        Keyed::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|cm| {
                let text = cm.data.unwrap_or_default().into_iter();
                let binary = cm.binary_data.unwrap_or_default().into_iter();
                text.map(|(k, v)| (k, v.into_bytes()))
                    .chain(binary.map(|(k, v)| (k, v.0)))
                    .collect()
            }),
        Keyed::Secret => Api::<Secret>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|s| {
                let binary = s.data.unwrap_or_default().into_iter();
                let text = s.string_data.unwrap_or_default().into_iter();
                binary
                    .map(|(k, v)| (k, v.0))
                    .chain(text.map(|(k, v)| (k, v.into_bytes())))
                    .collect()
            }),
    };
    match data {
        Some(data) => write_keys(&data, items, vdir),
        None if optional => Ok(()),
        None => bail!("{kind:?} {namespace}/{name} not found"),
    }
}

fn write_keys(
    data: &BTreeMap<String, Vec<u8>>,
    items: &Option<Vec<KeyToPath>>,
    vdir: &Path,
) -> Result<()> {
    match items {
        Some(items) => {
            for item in items {
                let value = data
                    .get(&item.key)
                    .with_context(|| format!("no key {}", item.key))?;
                write_atomic(&vdir.join(&item.path), value)?;
            }
        }
        None => {
            for (key, value) in data {
                write_atomic(&vdir.join(key), value)?;
            }
        }
    }
    Ok(())
}

fn downward(
    pod: &Pod,
    pod_ip: &str,
    items: &Option<Vec<DownwardAPIVolumeFile>>,
    vdir: &Path,
) -> Result<()> {
    for item in items.iter().flatten() {
        let field = item
            .field_ref
            .as_ref()
            .map(|f| f.field_path.as_str())
            .context("downwardAPI item without fieldRef (resourceFieldRef is not supported)")?;
        let value = field_value(pod, pod_ip, field)?;
        write_atomic(&vdir.join(&item.path), value.as_bytes())?;
    }
    Ok(())
}

/// The value of a `fieldRef` of this pod, as env `valueFrom` and downwardAPI use it.
pub fn field_value(pod: &Pod, pod_ip: &str, field: &str) -> Result<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let label = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = field.strip_prefix(prefix)?.strip_suffix("']")?;
        map.as_ref()?.get(key).cloned()
    };
    Ok(match field {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "status.podIP" => pod_ip.to_owned(),
        "status.hostIP" => pod_ip.to_owned(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        _ if field.starts_with("metadata.labels['") => {
            label(&meta.labels, "metadata.labels['").unwrap_or_default()
        }
        _ if field.starts_with("metadata.annotations['") => {
            label(&meta.annotations, "metadata.annotations['").unwrap_or_default()
        }
        _ => bail!("fieldRef {field} is not supported by the played kubelet"),
    })
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    let tmp = path.with_extension("weft-tmp");
    std::fs::write(&tmp, data).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path).with_context(|| format!("rename to {}", path.display()))?;
    Ok(())
}

/// `create_dir_all` with each directory it makes 0755, whatever the umask.
fn create_dirs(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    std::fs::create_dir(path).with_context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, Permissions::from_mode(0o755))?;
    Ok(())
}
