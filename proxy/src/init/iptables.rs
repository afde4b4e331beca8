//! Running `iptables-save` and `iptables-restore` (or the ip6tables pair), and turning
//! their failures into errors an operator can act on.
//!
//! Backend: the `iptables-*` commands found on `PATH`, i.e. whatever the distribution
//! selected (on Debian 12 and most current images that is the nf_tables backend,
//! `iptables-nft`). Weft never mixes backends within one run, and prints which one it
//! used, since rules written through one are invisible to the other's `-save`.

use std::io::{self, Write};
use std::process::{Command, Stdio};

use thiserror::Error;

use super::rules::Family;

/// Seconds iptables-restore waits for the xtables lock (legacy backend) instead of
/// failing at once when another process holds it; nf_tables ignores it.
const LOCK_WAIT_SECONDS: &str = "5";

/// Linux capability number of CAP_NET_ADMIN (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

#[derive(Debug, Error)]
pub enum IptablesError {
    #[error(
        "{} not found: install the iptables package ({tool} is not on PATH)",
        family_name(tool)
    )]
    NotFound { tool: &'static str },
    #[error(
        "needs CAP_NET_ADMIN (run as root or add the capability to the init container){}",
        detail.as_deref().map(|d| format!(": {tool} said: {d}")).unwrap_or_default()
    )]
    NotPermitted {
        tool: &'static str,
        detail: Option<String>,
    },
    #[error("{tool} failed ({status}): {stderr}")]
    Failed {
        tool: &'static str,
        status: String,
        stderr: String,
    },
    #[error("running {tool}: {source}")]
    Io {
        tool: &'static str,
        source: io::Error,
    },
}

impl IptablesError {
    /// sysexits.h: EX_UNAVAILABLE for a missing tool, EX_NOPERM for missing privileges;
    /// anything iptables itself rejected is a plain failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            IptablesError::NotFound { .. } => 69,
            IptablesError::NotPermitted { .. } => 77,
            IptablesError::Failed { .. } | IptablesError::Io { .. } => 1,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, IptablesError::NotFound { .. })
    }
}

/// "iptables" or "ip6tables", the name operators know the tools by.
fn family_name(tool: &str) -> &'static str {
    if tool.starts_with("ip6tables") {
        "ip6tables"
    } else {
        "iptables"
    }
}

fn save_tool(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    }
}

pub fn restore_tool(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables-restore",
        Family::V6 => "ip6tables-restore",
    }
}

/// Fails early, with the message operators need, when this process cannot change the
/// network namespace's tables. Unknown (no /proc) is not an error: iptables will say.
pub fn check_privileges() -> Result<(), IptablesError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match has_capability(&status, CAP_NET_ADMIN) {
        Some(false) => Err(IptablesError::NotPermitted {
            tool: "weft-proxy init",
            detail: None,
        }),
        _ => Ok(()),
    }
}

/// Reads the effective capability set from `/proc/<pid>/status` text.
pub fn has_capability(status: &str, capability: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(bits & (1 << capability) != 0)
}

/// The current nat table of this network namespace, as iptables-save prints it.
pub fn save(family: Family) -> Result<String, IptablesError> {
    let tool = save_tool(family);
    let output = Command::new(tool)
        .args(["-t", "nat"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(tool, e))?;
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if !output.status.success() {
        return Err(classify(tool, output.status.to_string(), stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Applies `ruleset` in one transaction, leaving every chain it does not name alone.
pub fn restore(family: Family, ruleset: &str) -> Result<(), IptablesError> {
    let tool = restore_tool(family);
    let mut child = Command::new(tool)
        .args(["--noflush", "--wait", LOCK_WAIT_SECONDS])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(tool, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Dropping stdin at the end of this block is the end of the transaction's input.
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|source| IptablesError::Io { tool, source })?;
    }
    let output = child
        .wait_with_output()
        .map_err(|source| IptablesError::Io { tool, source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        return Err(classify(tool, output.status.to_string(), stderr));
    }
    Ok(())
}

/// The backend named in iptables-save's header, e.g. "nf_tables" or "legacy".
pub fn backend(save_output: &str) -> Option<&str> {
    let header = save_output
        .lines()
        .find(|l| l.starts_with("# Generated by"))?;
    let start = header.find('(')? + 1;
    let end = start + header[start..].find(')')?;
    Some(&header[start..end])
}

/// iptables-nft warns in its output when legacy tables exist too: both then filter the
/// same packets, which is worth telling the operator about.
pub fn mixed_backend_warning(save_output: &str) -> Option<&str> {
    save_output
        .lines()
        .find(|l| l.starts_with("# Warning:"))
        .map(|l| l.trim_start_matches("# "))
}

fn spawn_error(tool: &'static str, error: io::Error) -> IptablesError {
    match error.kind() {
        io::ErrorKind::NotFound => IptablesError::NotFound { tool },
        io::ErrorKind::PermissionDenied => IptablesError::NotPermitted {
            tool,
            detail: Some(error.to_string()),
        },
        _ => IptablesError::Io {
            tool,
            source: error,
        },
    }
}

/// Both backends say "Permission denied (you must be root)" without the capability.
fn classify(tool: &'static str, status: String, stderr: String) -> IptablesError {
    if stderr.contains("Permission denied") || stderr.contains("Operation not permitted") {
        IptablesError::NotPermitted {
            tool,
            detail: Some(stderr),
        }
    } else {
        IptablesError::Failed {
            tool,
            status,
            stderr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_bits_are_read_from_proc_status() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let none = "CapEff:\t0000000000000000\n";
        let only_net_admin = "CapEff:\t0000000000001000\n";
        assert_eq!(has_capability(root, CAP_NET_ADMIN), Some(true));
        assert_eq!(has_capability(none, CAP_NET_ADMIN), Some(false));
        assert_eq!(has_capability(only_net_admin, CAP_NET_ADMIN), Some(true));
        assert_eq!(has_capability("Name:\tx\n", CAP_NET_ADMIN), None);
    }

    #[test]
    fn errors_carry_the_operator_messages_and_exit_codes() {
        let missing = spawn_error("iptables-save", io::ErrorKind::NotFound.into());
        assert_eq!(
            missing.to_string(),
            "iptables not found: install the iptables package (iptables-save is not on PATH)"
        );
        assert_eq!(missing.exit_code(), 69);
        let denied = classify(
            "iptables-restore",
            "exit status: 4".into(),
            "iptables-restore v1.8.9 (nf_tables): Could not fetch rule set generation id: \
             Permission denied (you must be root)"
                .into(),
        );
        assert!(
            denied.to_string().starts_with(
                "needs CAP_NET_ADMIN (run as root or add the capability to the init container)"
            ),
            "{denied}"
        );
        assert_eq!(denied.exit_code(), 77);
    }

    #[test]
    fn backend_and_warnings_come_from_the_save_header() {
        let save = "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n\
                    # Generated by iptables-save v1.8.9 (nf_tables) on Sat Nov 21 2026\n*nat\nCOMMIT\n";
        assert_eq!(backend(save), Some("nf_tables"));
        assert!(mixed_backend_warning(save).is_some_and(|w| w.contains("legacy")));
        assert_eq!(backend("*nat\nCOMMIT\n"), None);
    }
}
