//! What a proxy must be sent: the pure part of the discovery stream.
//!
//! A proxy's holdings are tracked as the view last pushed to it (shared with every
//! other proxy, so a thousand proxies cost one copy of the mesh) plus a few overrides
//! where it holds something else: versions it announced on reconnect, and the older
//! versions it kept when it NACKed a push.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::Arc;

use crate::view::{Delta, Entry, TypeView};

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
    delta: Option<&Delta>,
    held: &Held,
    interest: &Interest,
    rejected: &BTreeMap<Arc<str>, u64>,
) -> Diff {
    quick_diff(view, delta, held, interest, rejected)
        .unwrap_or_else(|| sweep(view, held, interest, rejected, None, usize::MAX).0)
}

/// [`diff`] when it costs O(changes): the proxy holds `view` itself, or exactly the
/// view `delta` starts from. None when only a walk of the whole view can tell.
pub fn quick_diff(
    view: &TypeView,
    delta: Option<&Delta>,
    held: &Held,
    interest: &Interest,
    rejected: &BTreeMap<Arc<str>, u64>,
) -> Option<Diff> {
    let mut out = Diff::default();
    if held.overrides.is_empty() && std::ptr::eq(view, held.base.as_ref()) {
        return Some(out);
    }
    // The common case: the proxy holds exactly the previous view.
    let delta = delta.filter(|d| held.overrides.is_empty() && Arc::ptr_eq(&d.from, &held.base))?;
    for name in &delta.changed {
        let Some(entry) = view.get(name) else {
            continue;
        };
        if interest.wants(name) && rejected.get(name) != Some(&entry.version) {
            out.changed.push((name.clone(), entry.clone()));
        }
    }
    out.removed = delta
        .removed
        .iter()
        .filter(|name| interest.wants(name))
        .cloned()
        .collect();
    Some(out)
}

/// Whether a proxy that holds `holds` of `name` must be sent it or told to drop it:
/// the per-name rule [`diff`] applies to every name.
pub fn owes(
    view: &TypeView,
    name: &str,
    holds: Option<u64>,
    interest: &Interest,
    rejected: &BTreeMap<Arc<str>, u64>,
) -> bool {
    if !interest.wants(name) {
        return false;
    }
    match view.get(name) {
        Some(entry) => holds != Some(entry.version) && rejected.get(name) != Some(&entry.version),
        None => holds.is_some(),
    }
}

/// One step of the full walk of the view against what the proxy holds: the names
/// after `after`, until about `budget` bytes are owed. Returns that part of the diff
/// and where to resume (None when the walk is complete). A full sync is sent this way
/// a response at a time, so a stream never holds a list as long as the mesh.
pub fn sweep(
    view: &TypeView,
    held: &Held,
    interest: &Interest,
    rejected: &BTreeMap<Arc<str>, u64>,
    after: Option<&str>,
    budget: usize,
) -> (Diff, Option<Arc<str>>) {
    let mut out = Diff::default();
    let range = (
        after.map_or(Bound::Unbounded, Bound::Excluded),
        Bound::Unbounded,
    );
    // Walk the view and the base together: both are sorted by name.
    let mut current = view.range::<str, _>(range).peekable();
    let mut base = held.base.range::<str, _>(range).peekable();
    let mut bytes = 0;
    loop {
        let more = current.peek().is_some() || base.peek().is_some();
        if bytes >= budget && more {
            // The walk yields names in order, so the last one owed is where to resume.
            let last = (out.removed.last().into_iter())
                .chain(out.changed.last().map(|(n, _)| n))
                .max()
                .cloned();
            return (out, last);
        }
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
                let holds = match held.overrides.get(name) {
                    Some(overridden) => *overridden,
                    None => in_base,
                };
                if owes(view, name, holds, interest, rejected) {
                    bytes += entry.body.value.len() + name.len() + 32;
                    out.changed.push((name.clone(), entry.clone()));
                }
            }
            Ordering::Greater => {
                let Some((name, entry)) = base.next() else {
                    break;
                };
                let holds = match held.overrides.get(name) {
                    Some(overridden) => *overridden,
                    None => Some(entry.version),
                };
                if owes(view, name, holds, interest, rejected) {
                    bytes += name.len() + 8;
                    out.removed.push(name.clone());
                }
            }
        }
    }
    // Overrides for names in neither map: announced on reconnect, gone since. Few,
    // so they all go in the walk's last step.
    for (name, version) in &held.overrides {
        if !view.contains_key(name)
            && !held.base.contains_key(name)
            && owes(view, name, *version, interest, rejected)
        {
            out.removed.push(name.clone());
        }
    }
    (out, None)
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
        let d = diff(&v, None, &Held::default(), &Interest::All, &BTreeMap::new());
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
        let d = diff(&after, None, &held, &Interest::All, &BTreeMap::new());
        assert_eq!(names(&d), (vec!["b", "d"], vec!["c"]));
    }

    #[test]
    fn the_same_view_costs_nothing() {
        let v = view(&[("a", 1)]);
        let held = Held {
            base: v.clone(),
            overrides: BTreeMap::new(),
        };
        assert!(diff(&v, None, &held, &Interest::All, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn a_reconnecting_proxy_gets_only_the_difference() {
        let v = view(&[("a", 1), ("b", 4)]);
        let held = Held::announced([("a".into(), 1), ("b".into(), 2), ("gone".into(), 3)]);
        let d = diff(&v, None, &held, &Interest::All, &BTreeMap::new());
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
        assert!(diff(&v, None, &held, &Interest::All, &rejected).is_empty());
        let newer = view(&[("a", 8)]);
        assert_eq!(
            names(&diff(&newer, None, &held, &Interest::All, &rejected)).0,
            ["a"]
        );
    }

    #[test]
    fn the_delta_shortcut_agrees_with_the_full_walk() {
        let before = view(&[("a", 1), ("b", 2), ("c", 3), ("e", 1)]);
        let after = view(&[("a", 1), ("b", 5), ("d", 6), ("e", 1)]);
        let delta = Delta {
            from: before.clone(),
            changed: vec![Arc::from("b"), Arc::from("d")],
            removed: vec![Arc::from("c")],
        };
        let held = Held {
            base: before,
            overrides: BTreeMap::new(),
        };
        let interests = [
            Interest::All,
            Interest::Names(BTreeSet::from(["b".to_owned(), "c".to_owned()])),
        ];
        let rejected = [BTreeMap::new(), BTreeMap::from([(Arc::from("b"), 5)])];
        for interest in &interests {
            for rejected in &rejected {
                let fast = diff(&after, Some(&delta), &held, interest, rejected);
                let slow = diff(&after, None, &held, interest, rejected);
                assert_eq!(names(&fast), names(&slow));
            }
        }
    }

    #[test]
    fn a_sweep_in_small_steps_agrees_with_the_full_walk() {
        let before = view(&[("a", 1), ("b", 2), ("c", 3), ("e", 1), ("g", 1)]);
        let after = view(&[("a", 1), ("b", 5), ("d", 6), ("e", 2), ("f", 1)]);
        let mut held = Held {
            base: before,
            overrides: BTreeMap::new(),
        };
        held.overrides.insert(Arc::from("gone"), Some(1));
        held.overrides.insert(Arc::from("f"), Some(1));
        let full = diff(&after, None, &held, &Interest::All, &BTreeMap::new());
        let mut stepped = Diff::default();
        let mut cursor: Option<Arc<str>> = None;
        loop {
            let (part, next) = sweep(
                &after,
                &held,
                &Interest::All,
                &BTreeMap::new(),
                cursor.as_deref(),
                1,
            );
            assert!(part.changed.len() + part.removed.len() <= 2, "{part:?}");
            stepped.changed.extend(part.changed);
            stepped.removed.extend(part.removed);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(names(&full), (vec!["b", "d", "e"], vec!["c", "g", "gone"]));
        assert_eq!(names(&stepped), names(&full));
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
        let d = diff(&after, None, &held, &only_a, &BTreeMap::new());
        assert_eq!(names(&d), (vec!["c"], vec!["a"]));
    }
}
