//! How a container's process is made: the image's local binary, `command`/`args` with
//! `$(VAR)` expanded, the environment the kubelet gives, the user and groups of its
//! securityContext, all inside the pod's network namespace.
//!
//! Processes share the host's filesystem, so a container's `volumeMounts` cannot be
//! mounted at their `mountPath`: each mountPath is instead rewritten to the volume's
//! host directory wherever it appears in the container's command, args and env.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Container;

use super::daemon::Daemon;
use super::pod::{Node, RunningPod, API_FORWARD_PORT};
use super::volumes;

impl RunningPod {
    /// Starts one container's process inside the pod's namespace.
    pub fn spawn(&mut self, node: &Node<'_>, container: &Container) -> Result<Daemon> {
        let image = container.image.as_deref().unwrap_or("");
        let binary = node.images.resolve(image).with_context(|| {
            format!(
                "container {}: no local binary for image {image:?}",
                container.name
            )
        })?;
        let user = self.user(container)?;

        // Mounts: longest mountPath first, so /a/b is rewritten before /a.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let dir = self
                .volumes
                .dirs
                .get(&mount.name)
                .with_context(|| format!("volumeMount of unknown volume {}", mount.name))?;
            let host = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => dir.join(sub),
                None => dir.clone(),
            };
            let record = (
                container.name.clone(),
                mount.mount_path.clone(),
                host.clone(),
            );
            if !self.mounts.contains(&record) {
                self.mounts.push(record);
            }
            mounts.push((mount.mount_path.trim_end_matches('/').to_owned(), host));
        }
        mounts.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        let rewrite = |value: &str| rewrite_paths(value, &mounts);

        let env = self.env(container)?;
        let expand = |value: &str| expand_vars(value, &env);
        let mut argv: Vec<String> = Vec::new();
        match container.command.as_deref() {
            Some([first, rest @ ..]) => {
                // The image's binary is its entrypoint; a command naming it (by path or
                // by name) runs that binary, anything else runs as given.
                let first = expand(first);
                let named = Path::new(&first).file_name() == binary.file_name()
                    || node.images.resolve(&first).as_ref() == Some(&binary);
                argv.push(if named {
                    binary.to_string_lossy().into_owned()
                } else {
                    first
                });
                argv.extend(rest.iter().map(|a| expand(a)));
            }
            _ => argv.push(binary.to_string_lossy().into_owned()),
        }
        argv.extend(container.args.iter().flatten().map(|a| expand(a)));
        // The image's binary is a host path already: a mount at a prefix of it (`/tmp`)
        // must not move it.
        let binary_text = binary.to_string_lossy();
        let argv: Vec<String> = argv
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 && *a == binary_text {
                    a.clone()
                } else {
                    rewrite(a)
                }
            })
            .collect();

        let netns = self
            .netns()
            .context("the pod's network namespace is gone")?;
        let mut command = match &user {
            // setpriv execs the program: the process keeps its pid, and signals reach it.
            Some(user) => {
                let mut command = netns.command("setpriv");
                command.args(user.setpriv_args()).args(&argv);
                command
            }
            None => {
                let mut command = netns.command(&argv[0]);
                command.args(&argv[1..]);
                command
            }
        };
        command.env_clear().current_dir(&self.dir);
        command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
        command.env("HOSTNAME", &self.name);
        for (key, value) in &env {
            // KUBECONFIG is the harness's own host path, not a path in the container: a
            // mount at a prefix of it (`/tmp`) must not rewrite it.
            let value = if key == "KUBECONFIG" {
                value.clone()
            } else {
                rewrite(value)
            };
            command.env(key, value);
        }
        let log = self.log_path(&container.name);
        Daemon::spawn(
            &format!("{}/{}/{}", self.namespace, self.name, container.name),
            &mut command,
            &log,
        )
    }

    /// The container's environment: what the kubelet adds (in-cluster API access),
    /// then `env` in order, `$(VAR)` expanded against what came before.
    fn env(&self, container: &Container) -> Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        env.insert("KUBERNETES_SERVICE_HOST".to_owned(), "127.0.0.1".to_owned());
        env.insert(
            "KUBERNETES_SERVICE_PORT".to_owned(),
            API_FORWARD_PORT.to_string(),
        );
        if self.service_account_dir().is_some() {
            env.insert(
                "KUBECONFIG".to_owned(),
                self.dir.join("kubeconfig").to_string_lossy().into_owned(),
            );
        }
        env.insert("RUST_BACKTRACE".to_owned(), "1".to_owned());
        for var in container.env.iter().flatten() {
            let value = if let Some(value) = &var.value {
                expand_vars(value, &env)
            } else if let Some(from) = &var.value_from {
                let field = from
                    .field_ref
                    .as_ref()
                    .map(|f| f.field_path.as_str())
                    .with_context(|| {
                        format!("env {}: only valueFrom.fieldRef is supported", var.name)
                    })?;
                volumes::field_value(&self.pod, &self.ip.to_string(), field)?
            } else {
                String::new()
            };
            env.insert(var.name.clone(), value);
        }
        Ok(env)
    }

    /// Who the container runs as: runAsUser/runAsGroup of its securityContext, else of
    /// the pod's; supplementalGroups and fsGroup as its other groups (the volumes are
    /// not chowned to fsGroup: emptyDirs are world-writable instead). None: root, as
    /// the harness runs.
    fn user(&self, container: &Container) -> Result<Option<User>> {
        let pod = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.as_ref());
        let own = container.security_context.as_ref();
        let uid = own
            .and_then(|s| s.run_as_user)
            .or_else(|| pod.and_then(|s| s.run_as_user));
        let gid = own
            .and_then(|s| s.run_as_group)
            .or_else(|| pod.and_then(|s| s.run_as_group));
        let non_root = own
            .and_then(|s| s.run_as_non_root)
            .or_else(|| pod.and_then(|s| s.run_as_non_root))
            .unwrap_or(false);
        // The images' binaries run as root unless told otherwise, as an image without
        // a USER does; runAsNonRoot refuses that, as the kubelet does.
        if non_root && uid.unwrap_or(0) == 0 {
            bail!(
                "container {} has runAsNonRoot and would run as root (set runAsUser)",
                container.name
            );
        }
        if uid.is_none() && gid.is_none() {
            return Ok(None);
        }
        let mut groups: Vec<i64> = pod
            .and_then(|s| s.supplemental_groups.clone())
            .unwrap_or_default();
        groups.extend(pod.and_then(|s| s.fs_group));
        Ok(Some(User { uid, gid, groups }))
    }
}

/// A container's user and groups, as `setpriv` takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct User {
    uid: Option<i64>,
    gid: Option<i64>,
    groups: Vec<i64>,
}

impl User {
    fn setpriv_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(uid) = self.uid {
            args.extend(["--reuid".to_owned(), uid.to_string()]);
        }
        if let Some(gid) = self.gid {
            args.extend(["--regid".to_owned(), gid.to_string()]);
        }
        if self.groups.is_empty() {
            args.push("--clear-groups".to_owned());
        } else {
            let list: Vec<String> = self.groups.iter().map(i64::to_string).collect();
            args.extend(["--groups".to_owned(), list.join(",")]);
        }
        args
    }
}

/// Expands `$(VAR)` from `env`; `$$(VAR)` stays literal `$(VAR)`, unknown names stay.
pub fn expand_vars(value: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$$") {
            out.push('$');
            rest = after;
        } else if let Some(close) = tail.strip_prefix("$(").and_then(|t| t.find(')')) {
            let name = &tail[2..2 + close];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..3 + close]),
            }
            rest = &tail[3 + close..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Replaces each mount path in `value` by its host directory, in one pass: only where
/// a path starts (the value's start, or after a character no path has, such as `=` or
/// `,`) and ends (a `/` or such a character follows), longest mount first, and never
/// inside text already replaced (host directories start with `/tmp`, a common mount).
fn rewrite_paths(value: &str, mounts: &[(String, PathBuf)]) -> String {
    let in_path = |c: char| c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    'scan: while let Some(next) = rest.chars().next() {
        if !out.ends_with(in_path) {
            for (path, host) in mounts {
                let Some(after) = rest.strip_prefix(path.as_str()) else {
                    continue;
                };
                if after.is_empty() || after.starts_with('/') || !after.starts_with(in_path) {
                    out.push_str(&host.to_string_lossy());
                    rest = after;
                    continue 'scan;
                }
            }
        }
        out.push(next);
        rest = &rest[next.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_rewritten_once_and_only_where_a_path_is() {
        let mounts = vec![
            (
                "/var/run/weft/token".to_owned(),
                PathBuf::from("/tmp/pod/volumes/weft-token"),
            ),
            ("/tmp".to_owned(), PathBuf::from("/tmp/pod/volumes/tmp")),
        ];
        let cases = [
            (
                "/var/run/weft/token/token",
                "/tmp/pod/volumes/weft-token/token",
            ),
            ("--dir=/tmp", "--dir=/tmp/pod/volumes/tmp"),
            ("/tmp/x,/tmp", "/tmp/pod/volumes/tmp/x,/tmp/pod/volumes/tmp"),
            ("/tmpfile", "/tmpfile"),
            ("/var/tmp/x", "/var/tmp/x"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
        ];
        for (value, want) in cases {
            assert_eq!(rewrite_paths(value, &mounts), want, "{value}");
        }
    }

    #[test]
    fn a_user_becomes_setpriv_arguments() {
        let user = User {
            uid: Some(1337),
            gid: Some(1337),
            groups: vec![],
        };
        assert_eq!(
            user.setpriv_args(),
            ["--reuid", "1337", "--regid", "1337", "--clear-groups"]
        );
        let user = User {
            uid: Some(1000),
            gid: None,
            groups: vec![2000, 3000],
        };
        assert_eq!(
            user.setpriv_args(),
            ["--reuid", "1000", "--groups", "2000,3000"]
        );
    }
}
