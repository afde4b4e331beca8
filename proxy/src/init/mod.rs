//! `weft-proxy init`: transparent capture (DESIGN.md decision 12). Run once per pod,
//! before the app starts (an init container), it writes the iptables nat rules that send
//! the pod's TCP traffic through the proxy, then exits.
//!
//! # Layout
//! - [`config`]: the flags and `WEFT_*` variables, every bad value reported (exit 64).
//! - [`rules`]: the rules themselves, a pure function of the config and the current table.
//! - [`iptables`]: running iptables-save / iptables-restore and classifying failures.
//!
//! Where it sits: these rules send the app's connections to the proxy's outbound listener
//! and other pods' connections to its inbound listener; the proxy then reads where each
//! was going with [`crate::capture::original_dst`].

pub mod config;
pub mod iptables;
pub mod rules;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use self::config::{Action, Capture, InitArgs, InitConfig};
use self::iptables::IptablesError;
use self::rules::{Family, NatTable};

/// Runs `weft-proxy init` with `args` (the first one is taken as the program name).
pub fn main(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match InitArgs::try_parse_from(args) {
        Ok(args) => args,
        Err(e) => {
            // --help and --version are not usage errors; everything else is EX_USAGE,
            // like the proxy's own config errors (clap would exit 2).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let config = match InitConfig::from_args(args) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                eprintln!("weft-proxy init: {e}");
            }
            return ExitCode::from(64);
        }
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("weft-proxy init: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn run(config: &InitConfig) -> Result<(), IptablesError> {
    match &config.action {
        Action::Apply(capture) if config.dry_run => {
            print!("{}", dry_run(capture, config.ipv6));
            Ok(())
        }
        Action::Apply(capture) => {
            apply(capture, Family::V4)?;
            if config.ipv6 {
                apply(capture, Family::V6)
            } else {
                // Without --ipv6 the IPv6 table should hold nothing of Weft's; an earlier
                // run with --ipv6 may have left rules there.
                cleanup_optional_v6(false).map(drop)
            }
        }
        Action::Cleanup => {
            let mut removed = cleanup(Family::V4, config.dry_run)?;
            removed |= if config.ipv6 {
                cleanup(Family::V6, config.dry_run)?
            } else {
                cleanup_optional_v6(config.dry_run)?
            };
            if !removed {
                eprintln!("weft-proxy init: no Weft rules to remove");
            }
            Ok(())
        }
    }
}

/// The rules for a pod without Weft rules, in iptables-restore format. Reads nothing
/// and needs no privileges, so it also works on a laptop or in CI.
pub fn dry_run(capture: &Capture, ipv6: bool) -> String {
    let mut out = String::new();
    let families: &[Family] = if ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    for family in families {
        out.push_str(&format!(
            "# weft-proxy init: {family} rules, applied with `{} --noflush`\n",
            iptables::restore_tool(*family)
        ));
        out.push_str(&rules::apply_ruleset(
            capture,
            *family,
            &NatTable::default(),
        ));
    }
    out
}

fn apply(capture: &Capture, family: Family) -> Result<(), IptablesError> {
    // Saving first reports a missing iptables as such; the capability check then names
    // the fix before iptables-restore can fail less clearly.
    let saved = iptables::save(family)?;
    iptables::check_privileges()?;
    warn_mixed_backends(&saved);
    let existing = NatTable::parse(&saved);
    iptables::restore(family, &rules::apply_ruleset(capture, family, &existing))?;
    eprintln!(
        "weft-proxy init: {family}: wrote {} rules in {} chains ({} backend{})",
        rules::capture_rules(capture, family).len(),
        rules::CHAINS.len(),
        iptables::backend(&saved).unwrap_or("unknown"),
        if existing.is_clean() {
            ""
        } else {
            ", replacing earlier Weft rules"
        },
    );
    Ok(())
}

/// Removes (or, for a dry run, prints the removal of) Weft's rules for `family`;
/// returns whether there were any.
fn cleanup(family: Family, dry_run: bool) -> Result<bool, IptablesError> {
    // Reading the table needs the capability too, even for a dry run.
    let saved = iptables::save(family)?;
    iptables::check_privileges()?;
    let Some(ruleset) = rules::cleanup_ruleset(&NatTable::parse(&saved)) else {
        return Ok(false);
    };
    if dry_run {
        print!(
            "# weft-proxy init --cleanup: {family}, applied with `{} --noflush`\n{ruleset}",
            iptables::restore_tool(family)
        );
    } else {
        iptables::restore(family, &ruleset)?;
        eprintln!("weft-proxy init: {family}: removed Weft's chains and jumps");
    }
    Ok(true)
}

/// IPv6 cleanup when IPv6 was not asked for: ip6tables may be absent, or the kernel may
/// lack IPv6 nat; then there can be no Weft rules there either, so that is no error.
fn cleanup_optional_v6(dry_run: bool) -> Result<bool, IptablesError> {
    match cleanup(Family::V6, dry_run) {
        Err(e) if e.is_not_found() => Ok(false),
        Err(IptablesError::Failed { stderr, .. }) => {
            eprintln!("weft-proxy init: IPv6: skipped, ip6tables unusable: {stderr}");
            Ok(false)
        }
        other => other,
    }
}

fn warn_mixed_backends(saved: &str) {
    if let Some(warning) = iptables::mixed_backend_warning(saved) {
        eprintln!(
            "weft-proxy init: warning: {warning}; rules of both backends apply to the same \
             packets, check that nothing else captures this pod's traffic"
        );
    }
}
