//! Which local binary runs each container image: the played kubelet pulls nothing, it
//! maps image names to binaries on the host.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Which local binary runs each container image.
#[derive(Debug, Clone, Default)]
pub struct Images(BTreeMap<String, PathBuf>);

impl Images {
    pub fn new() -> Images {
        Images::default()
    }

    /// Runs `binary` for containers whose image is `image` (any tag, digest or
    /// registry prefix: `example.org/weft/weft-proxy:1.2` matches `weft-proxy`).
    pub fn with(mut self, image: &str, binary: impl Into<PathBuf>) -> Images {
        self.0.insert(image.to_owned(), binary.into());
        self
    }

    /// The workspace's own binaries under their names (`weft-proxy`,
    /// `weft-control-plane`, `weftctl`, `weft-test-app`, ...), those that are built.
    pub fn workspace() -> Images {
        let mut images = Images::new();
        for name in [
            "weft-proxy",
            "weft-control-plane",
            "weftctl",
            "weft-test-app",
            "weft-probe",
            "weft-shop",
        ] {
            let path = crate::bin_dir().join(name);
            if path.exists() {
                images = images.with(name, path);
            }
        }
        images
    }

    pub fn resolve(&self, image: &str) -> Option<PathBuf> {
        let no_digest = image.split('@').next().unwrap_or(image);
        let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
        let untagged = match last.rsplit_once(':') {
            Some((name, _)) => &no_digest[..no_digest.len() - last.len() + name.len()],
            None => no_digest,
        };
        let base = untagged.rsplit('/').next().unwrap_or(untagged);
        [image, no_digest, untagged, base]
            .iter()
            .find_map(|key| self.0.get(*key).cloned())
    }
}
