//! One HTTP service, `shop/web`, behind a client proxy: the setting of the chaos
//! and availability tests. A real control plane declares the service and its
//! endpoints (the apps, with their flags); the load goes to the client proxy's
//! explicit listener for the service.

use std::net::SocketAddr;
use std::time::Duration;

use crate::mesh::{
    client_proxy, endpoint_addresses, metric_value, weftctl_ok, App, ControlPlane, Proxy,
};
use crate::{free_port, http_get, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// A control plane, one client proxy with an explicit listener for `shop/web`, and
/// the apps behind it as the service's endpoints.
pub struct Mesh {
    _dir: tempfile::TempDir,
    _cp: ControlPlane,
    pub client: Proxy,
    /// Where the load goes: the client proxy's listener for shop/web.
    pub listen: SocketAddr,
    pub apps: Vec<App>,
}

impl Mesh {
    /// `apps`: a name and the app's flags each; `spec` adds lines (two-space
    /// indented) to the Service's spec.
    pub fn start(apps: &[(&str, &[&str])], spec: &str) -> Mesh {
        Mesh::start_with(apps, "http1", spec)
    }

    /// Like [`Mesh::start`] with the service port's protocol.
    pub fn start_with(apps: &[(&str, &[&str])], protocol: &str, spec: &str) -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let cp = ControlPlane::start(dir.path(), &dir.path().join("data"), free_port(), &[]);
        let apps: Vec<App> = apps
            .iter()
            .map(|(name, flags)| App::start(dir.path(), name, flags))
            .collect();
        let (client, listen) = client_proxy(dir.path(), &cp.address(), "client", "shop/web", &[]);
        let mut yaml = format!(
            "kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  ports:
  - {{port: 80, protocol: {protocol}}}
{spec}
---
kind: Endpoints
metadata: {{name: web, namespace: shop}}
spec:
  endpoints:
"
        );
        for app in &apps {
            yaml.push_str(&format!(
                "  - {{address: {}, port: {}}}\n",
                app.addr.ip(),
                app.addr.port()
            ));
        }
        weftctl_ok(&cp.address(), &["apply", "-f", "-"], Some(&yaml));
        client.wait_ready();
        wait_for("the client to see every endpoint", WAIT, || {
            (endpoint_addresses(&client.config_dump(), "shop/web").len() == apps.len())
                .then_some(())
        });
        // An app's answer (its name), even a failing one; not the proxy's own.
        wait_for("a first answer from an app through the proxy", WAIT, || {
            let (_, body) = http_get(listen, "/").ok()?;
            apps.iter().any(|a| body.trim() == a.name).then_some(())
        });
        Mesh {
            _dir: dir,
            _cp: cp,
            client,
            listen,
            apps,
        }
    }

    pub fn metric(&self, parts: &[&str]) -> f64 {
        metric_value(&self.client.metrics(), parts).unwrap_or(0.0)
    }

    /// Requests that reached the app (its own count).
    pub fn served(&self, app: usize) -> u64 {
        let (status, body) = http_get(self.apps[app].addr, "/served").expect("GET /served");
        assert_eq!(status, 200, "{body}");
        body.trim().parse().expect("a count")
    }
}
