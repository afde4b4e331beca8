//! What the injector puts into a pod that is not the pod's own business: the proxy's
//! image, the control plane's address, the proxy's UID and default resources. One
//! YAML document, the `config.yaml` key of the ConfigMap `weft-injector` for the
//! webhook and the `--config` file of `weftctl inject`, so that both inject the same.

use serde::{Deserialize, Serialize};

/// The injector's settings; every field has a default, so an empty document (or no
/// ConfigMap at all) injects a working sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// The image of both the init step and the proxy (its entrypoint is `weft-proxy`).
    pub proxy_image: String,
    /// Where proxies reach the control plane: `host:port[,host:port...]`.
    pub control_plane: String,
    /// The proxy's UID and GID: the iptables rules let this UID's traffic through.
    pub proxy_uid: u32,
    /// The proxy's log filter.
    pub log_level: String,
    /// The proxy's resources unless a pod's annotations say otherwise.
    pub resources: Resources,
}

/// Quantities as Kubernetes writes them (`10m`, `32Mi`); an empty one is not set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Resources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            proxy_image: format!("weft-proxy:{}", env!("CARGO_PKG_VERSION")),
            control_plane: "weft-control-plane.weft.svc:15010".to_owned(),
            proxy_uid: 1337,
            log_level: "info".to_owned(),
            resources: Resources::default(),
        }
    }
}

impl Default for Resources {
    /// Requests sized for an idle proxy, so the scheduler counts it; a memory limit
    /// well above a busy proxy's RSS; no CPU limit, because CFS throttling of a proxy
    /// shows up as latency in every request it carries.
    fn default() -> Resources {
        Resources {
            cpu_request: "10m".to_owned(),
            memory_request: "32Mi".to_owned(),
            cpu_limit: String::new(),
            memory_limit: "256Mi".to_owned(),
        }
    }
}

/// Settings that cannot be used, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injector settings: {0}")]
pub struct InvalidSettings(pub String);

impl Settings {
    /// Parses and checks a settings document (YAML or JSON).
    pub fn parse(text: &str) -> Result<Settings, InvalidSettings> {
        let settings: Settings = if text.trim().is_empty() {
            Settings::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| InvalidSettings(e.to_string()))?
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<(), InvalidSettings> {
        if self.proxy_image.trim().is_empty() {
            return Err(InvalidSettings("proxyImage: must not be empty".to_owned()));
        }
        if self.control_plane.trim().is_empty() {
            return Err(InvalidSettings(
                "controlPlane: must not be empty".to_owned(),
            ));
        }
        if self.proxy_uid == 0 {
            // The iptables rules exempt this UID: root's traffic would bypass the mesh.
            return Err(InvalidSettings("proxyUid: must not be 0".to_owned()));
        }
        for (field, value) in [
            ("resources.cpuRequest", &self.resources.cpu_request),
            ("resources.memoryRequest", &self.resources.memory_request),
            ("resources.cpuLimit", &self.resources.cpu_limit),
            ("resources.memoryLimit", &self.resources.memory_limit),
        ] {
            if !value.is_empty() {
                check_quantity(value).map_err(|e| InvalidSettings(format!("{field}: {e}")))?;
            }
        }
        Ok(())
    }
}

/// Checks the shape of a Kubernetes quantity (`250m`, `1.5`, `64Mi`, `1e3`), so a
/// typo is refused here with its field's name rather than by the API server with a
/// message about the pod.
pub fn check_quantity(text: &str) -> Result<(), String> {
    let number_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(number_end);
    let number_ok =
        !number.is_empty() && number.chars().filter(|c| *c == '.').count() <= 1 && number != ".";
    let suffix_ok = matches!(
        suffix,
        "" | "m" | "k" | "M" | "G" | "T" | "P" | "E" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
    ) || suffix
        .strip_prefix(['e', 'E'])
        .is_some_and(|exp| !exp.is_empty() && exp.chars().all(|c| c.is_ascii_digit()));
    if number_ok && suffix_ok {
        Ok(())
    } else {
        Err(format!("{text:?} is not a Kubernetes quantity"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_document_is_the_defaults() {
        assert_eq!(
            Settings::parse("").expect("valid settings"),
            Settings::default()
        );
        assert_eq!(
            Settings::parse("{}\n").expect("valid settings"),
            Settings::default()
        );
    }

    #[test]
    fn fields_are_read_and_the_rest_defaulted() {
        let settings = Settings::parse(
            "proxyImage: example.org/weft-proxy:9\ncontrolPlane: 10.0.0.1:15010\n\
             resources: {memoryLimit: 1Gi}\n",
        )
        .expect("present in the fixture");
        assert_eq!(settings.proxy_image, "example.org/weft-proxy:9");
        assert_eq!(settings.control_plane, "10.0.0.1:15010");
        assert_eq!(settings.proxy_uid, 1337);
        assert_eq!(settings.resources.memory_limit, "1Gi");
        // A field left out of `resources` keeps its default, not empty.
        assert_eq!(settings.resources.cpu_request, "10m");
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (text, field) in [
            ("proxyImage: ''", "proxyImage"),
            ("proxyUid: 0", "proxyUid"),
            ("resources: {memoryLimit: lots}", "resources.memoryLimit"),
            ("proxyImag: x", "unknown field `proxyImag`"),
        ] {
            let error = Settings::parse(text).expect_err("refused").to_string();
            assert!(error.contains(field), "{text}: {error}");
        }
    }

    #[test]
    fn quantities_are_checked_by_shape() {
        for good in ["10m", "1", "1.5", "64Mi", "2Gi", "1e3", "100k"] {
            assert_eq!(check_quantity(good), Ok(()), "{good}");
        }
        for bad in ["", "m", "1.2.3", "10 m", "64MB", "-1", "1e", "."] {
            assert!(check_quantity(bad).is_err(), "{bad}");
        }
    }
}
