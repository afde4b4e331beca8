//! The open-descriptor limit. Every connection the proxy carries costs it two
//! descriptors (and a spliced one briefly borrows a pipe's two more), so the soft
//! limit a shell or a service manager often leaves at 1024 would cap a busy
//! sidecar at a few hundred connections. At start the proxy raises its soft limit
//! to the hard one, as the Go runtime does for every program; the hard limit is
//! the operator's (a container runtime's `nofile`), and is left alone.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The most downstream connections the proxy takes by default, whatever the
/// open-files limit: about 8 KB each while idle, so under a GiB at the bound.
const MAX_CONNECTIONS: usize = 100_000;

/// Raises the soft open-files limit to the hard one; returns the limit before and
/// after. Nothing changes when the hard limit is unlimited (Linux caps this one
/// at `fs.nr_open`, so "unlimited" cannot be set) or the soft one is already there.
pub fn raise_open_files() -> std::io::Result<(Option<u64>, Option<u64>)> {
    let limit = getrlimit(Resource::Nofile);
    let (Some(current), Some(maximum)) = (limit.current, limit.maximum) else {
        return Ok((limit.current, limit.current));
    };
    if current >= maximum {
        return Ok((Some(current), Some(current)));
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(maximum),
            maximum: Some(maximum),
        },
    )?;
    Ok((Some(current), Some(maximum)))
}

/// The default bound on downstream connections open at once: half the soft
/// open-files limit (each proxied connection holds its own descriptor and one to
/// an upstream, as HAProxy sizes `maxconn` from `ulimit -n`), at most
/// [`MAX_CONNECTIONS`]. Read after [`raise_open_files`].
pub fn connection_limit() -> usize {
    let soft = getrlimit(Resource::Nofile).current;
    let half = soft.map_or(MAX_CONNECTIONS as u64, |n| n / 2);
    usize::try_from(half)
        .unwrap_or(MAX_CONNECTIONS)
        .clamp(1, MAX_CONNECTIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        let hard = getrlimit(Resource::Nofile).maximum;
        // Start below the hard limit (lowering the soft limit is always allowed),
        // but high enough for the other tests running alongside.
        if let Some(hard) = hard {
            let soft = hard.min(4096);
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(soft),
                    maximum: Some(hard),
                },
            )
            .expect("lower the soft limit");
        }
        let (_, after) = raise_open_files().expect("raise");
        let now = getrlimit(Resource::Nofile);
        assert_eq!(
            now.current, now.maximum,
            "soft limit left below the hard one"
        );
        assert_eq!(after, now.current);
    }

    #[test]
    fn the_connection_limit_leaves_a_descriptor_per_upstream() {
        let limit = connection_limit() as u64;
        assert!((1..=MAX_CONNECTIONS as u64).contains(&limit));
        if let Some(soft) = getrlimit(Resource::Nofile).current {
            assert!(limit * 2 <= soft.max(2), "{limit} of {soft}");
        }
    }
}
