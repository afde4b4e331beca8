//! What a proxy must be sent: the pure part of the discovery stream.
//!
//! A proxy's holdings are tracked as the view last pushed to it (shared with every
//! other proxy, so a thousand proxies cost one copy of the mesh) plus a few overrides
//! where it holds something else: versions it announced on reconnect, and the older
//! versions it kept when it NACKed a push.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::view::{Entry, TypeView};

/// Which resources of a type a proxy wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interest {
    All,
    Names(BTreeSet<String>),
}

impl Interest {
    pub fn wants(&self, name: &str) -> bool {
        match self {
            Interest::All => true,
            Interest::Names(names) => names.contains(name),
        }
    }
}

/// What one proxy holds of one type.
#[derive(Debug, Clone, Default)]
pub struct Held {
    pub base: Arc<TypeView>,
    /// Where the proxy differs from `base`: `Some(v)` holds version v, `None` nothing.
    pub overrides: BTreeMap<Arc<str>, Option<u64>>,
}

impl Held {
    /// What a proxy announced in its Hello.
    pub fn announced(known: impl IntoIterator<Item = (String, u64)>) -> Held {
        Held {
            base: Arc::default(),
            overrides: known
                .into_iter()
                .map(|(name, version)| (Arc::from(name), Some(version)))
                .collect(),
        }
    }

    pub fn version_of(&self, name: &str) -> Option<u64> {
        match self.overrides.get(name) {
            Some(overridden) => *overridden,
            None => self.base.get(name).map(|e| e.version),
        }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Diff {
    pub changed: Vec<(Arc<str>, Entry)>,
    pub removed: Vec<Arc<str>>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The resources to send and the names to remove so that a proxy holding `held` ends
/// up with `view` (as far as `interest` goes). A resource whose current version the
/// proxy already rejected (`rejected`) is not sent again: it would be rejected again.
pub fn diff(
    view: &TypeView,
    held: &Held,
    interest: &Interest,
    rejected: &BTreeMap<Arc<str>, u64>,
) -> Diff {
    let mut out = Diff::default();
    if held.overrides.is_empty() && std::ptr::eq(view, held.base.as_ref()) {
        return out;
    }
    // Walk the view and the base together: both are sorted by name.
    let mut current = view.iter().peekable();
    let mut base = held.base.iter().peekable();
    loop {
        let order = match (current.peek(), base.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((a, _)), Some((b, _))) => a.cmp(b),
        };
        match order {
            Ordering::Less | Ordering::Equal => {
                let Some((name, entry)) = current.next() else {
                    break;
                };
                let in_base = if order == Ordering::Equal {
                    base.next().map(|(_, e)| e.version)
                } else {
                    None
                };
                if !interest.wants(name) {
                    continue;
                }
                let holds = match held.overrides.get(name) {
                    Some(overridden) => *overridden,
                    None => in_base,
                };
                let already_rejected = rejected.get(name) == Some(&entry.version);
                if holds != Some(entry.version) && !already_rejected {
                    out.changed.push((name.clone(), entry.clone()));
                }
            }
            Ordering::Greater => {
                let Some((name, _)) = base.next() else { break };
                let still_held = !matches!(held.overrides.get(name), Some(None));
                if still_held && interest.wants(name) {
                    out.removed.push(name.clone());
                }
            }
        }
    }
    // Overrides for names in neither map: announced on reconnect, gone since.
    for (name, version) in &held.overrides {
        if version.is_some()
            && !view.contains_key(name)
            && !held.base.contains_key(name)
            && interest.wants(name)
        {
            out.removed.push(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_types::Any;

    fn entry(version: u64) -> Entry {
        Entry {
            version,
            body: Arc::new(Any::default()),
        }
    }

    fn view(items: &[(&str, u64)]) -> Arc<TypeView> {
        Arc::new(
            items
                .iter()
                .map(|(n, v)| (Arc::from(*n), entry(*v)))
                .collect(),
        )
    }

    fn names(d: &Diff) -> (Vec<&str>, Vec<&str>) {
        (
            d.changed.iter().map(|(n, _)| n.as_ref()).collect(),
            d.removed.iter().map(|n| n.as_ref()).collect(),
        )
    }

    #[test]
    fn a_new_proxy_gets_everything() {
        let v = view(&[("a", 1), ("b", 2)]);
        let d = diff(&v, &Held::default(), &Interest::All, &BTreeMap::new());
        assert_eq!(names(&d), (vec!["a", "b"], vec![]));
    }

    #[test]
    fn only_changed_and_removed_resources_are_sent() {
        let before = view(&[("a", 1), ("b", 2), ("c", 3)]);
        let after = view(&[("a", 1), ("b", 5), ("d", 6)]);
        let held = Held {
            base: before,
            overrides: BTreeMap::new(),
        };
        let d = diff(&after, &held, &Interest::All, &BTreeMap::new());
        assert_eq!(names(&d), (vec!["b", "d"], vec!["c"]));
    }

    #[test]
    fn the_same_view_costs_nothing() {
        let v = view(&[("a", 1)]);
        let held = Held {
            base: v.clone(),
            overrides: BTreeMap::new(),
        };
        assert!(diff(&v, &held, &Interest::All, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_reconnecting_proxy_gets_only_the_difference() {
        let v = view(&[("a", 1), ("b", 4)]);
        let held = Held::announced([("a".into(), 1), ("b".into(), 2), ("gone".into(), 3)]);
        let d = diff(&v, &held, &Interest::All, &BTreeMap::new());
        assert_eq!(names(&d), (vec!["b"], vec!["gone"]));
    }

    #[test]
    fn a_rejected_version_is_not_resent_but_a_newer_one_is() {
        let v = view(&[("a", 7)]);
        let mut held = Held {
            base: v.clone(),
            overrides: BTreeMap::new(),
        };
        held.overrides.insert(Arc::from("a"), Some(3));
        let rejected = BTreeMap::from([(Arc::from("a"), 7)]);
        assert!(diff(&v, &held, &Interest::All, &rejected).is_empty());
        let newer = view(&[("a", 8)]);
        assert_eq!(
            names(&diff(&newer, &held, &Interest::All, &rejected)).0,
            ["a"]
        );
    }

    #[test]
    fn interest_filters_both_sends_and_removals() {
        let before = view(&[("a", 1), ("b", 1)]);
        let after = view(&[("c", 2)]);
        let held = Held {
            base: before,
            overrides: BTreeMap::new(),
        };
        let only_a = Interest::Names(BTreeSet::from(["a".to_owned(), "c".to_owned()]));
        let d = diff(&after, &held, &only_a, &BTreeMap::new());
        assert_eq!(names(&d), (vec!["c"], vec!["a"]));
    }
}
