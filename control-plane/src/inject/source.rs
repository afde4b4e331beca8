//! The injector's settings on Kubernetes: the key `config.yaml` of the ConfigMap
//! `weft-injector` in the control plane's namespace, watched, so a change applies to
//! the next pod without a restart. A document that does not parse or check is
//! refused with its reason in the log and the last good settings keep serving; no
//! ConfigMap means the defaults.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

use super::settings::{InvalidSettings, Settings};

/// The ConfigMap's key holding the settings document.
pub const KEY: &str = "config.yaml";

/// The settings a ConfigMap holds; no ConfigMap or no key is the defaults.
pub fn from_config_map(config_map: Option<&ConfigMap>) -> Result<Settings, InvalidSettings> {
    let text = config_map
        .and_then(|c| c.data.as_ref())
        .and_then(|data| data.get(KEY))
        .map(String::as_str)
        .unwrap_or("");
    Settings::parse(text)
}

/// Watches the ConfigMap `name` in `namespace` and publishes each good version.
pub fn watch(client: Client, namespace: &str, name: &str) -> watch::Receiver<Arc<Settings>> {
    let (tx, rx) = watch::channel(Arc::new(Settings::default()));
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let name = name.to_owned();
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            let found = match event {
                Ok(Event::Apply(config_map) | Event::InitApply(config_map)) => Some(config_map),
                Ok(Event::Delete(_)) => None,
                Ok(Event::Init | Event::InitDone) => continue,
                Err(error) => {
                    tracing::warn!(%error, name, "watching the injector's ConfigMap");
                    continue;
                }
            };
            match from_config_map(found.as_ref()) {
                Ok(settings) => {
                    if **tx.borrow() != settings {
                        tracing::info!(?settings, "injector settings");
                        tx.send_replace(Arc::new(settings));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, name, "injector settings refused; the last good ones stay")
                }
            }
        }
    });
    rx
}
