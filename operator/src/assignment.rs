//! Split assignment: which ready worker pod reads which split.
//!
//! The assignment is stable: a split stays with its owner while that owner is ready and not
//! above its fair share, so a pod joining or leaving moves as few splits as possible. Shares
//! are balanced (every worker holds ⌊n/w⌋ or ⌈n/w⌉ splits); the larger shares go to the
//! workers that already hold the most, so balancing never moves a split it need not move. The
//! generation grows only when an owner changes, which is what lets a worker's checkpoint write
//! under an older generation be refused.
//!
//! Pure: no I/O, deterministic for the same inputs.

use std::collections::{BTreeMap, BTreeSet};

use jetflow_crds::assignment::Assignment;

/// The next assignment of `splits` to `workers` (ready worker pods), starting from `previous`.
///
/// With no ready worker the previous owners are kept (minus splits that no longer exist):
/// nobody can read them anyway, and a pipeline whose pods all restart should not see its
/// assignment churn twice.
pub fn assign(splits: &[String], workers: &[String], previous: &Assignment) -> Assignment {
    let splits: BTreeSet<&str> = splits.iter().map(String::as_str).collect();
    let workers: BTreeSet<&str> = workers.iter().map(String::as_str).collect();

    let owners: BTreeMap<String, String> = if workers.is_empty() {
        previous
            .owners
            .iter()
            .filter(|(split, _)| splits.contains(split.as_str()))
            .map(|(s, o)| (s.clone(), o.clone()))
            .collect()
    } else {
        balance(&splits, &workers, previous)
    };

    let generation = if owners == previous.owners {
        previous.generation
    } else {
        previous.generation + 1
    };
    Assignment { generation, owners }
}

fn balance(
    splits: &BTreeSet<&str>,
    workers: &BTreeSet<&str>,
    previous: &Assignment,
) -> BTreeMap<String, String> {
    // Splits each worker keeps from the previous assignment, in split order.
    let mut held: BTreeMap<&str, Vec<&str>> = workers.iter().map(|w| (*w, Vec::new())).collect();
    for (split, owner) in &previous.owners {
        if splits.contains(split.as_str())
            && let Some(list) = held.get_mut(owner.as_str())
        {
            list.push(split.as_str());
        }
    }

    // Fair shares: the ⌈n/w⌉ shares go to the workers holding the most already.
    let n = splits.len();
    let w = workers.len();
    let (base, extra) = (n / w, n % w);
    let mut order: Vec<&str> = workers.iter().copied().collect();
    order.sort_by(|a, b| held[b].len().cmp(&held[a].len()).then(a.cmp(b)));
    let cap: BTreeMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, worker)| (*worker, base + usize::from(i < extra)))
        .collect();

    // Release what is above a worker's share (the last splits in name order).
    for (worker, list) in held.iter_mut() {
        list.truncate(cap[worker]);
    }

    // Give every unowned split to the worker with the fewest splits below its share.
    let owned: BTreeSet<&str> = held.values().flatten().copied().collect();
    for split in splits.iter().filter(|s| !owned.contains(*s)) {
        let target = order
            .iter()
            .filter(|w| held[*w].len() < cap[*w])
            .min_by(|a, b| held[*a].len().cmp(&held[*b].len()).then(a.cmp(b)))
            .copied();
        if let Some(worker) = target
            && let Some(list) = held.get_mut(worker)
        {
            list.push(split);
        }
    }

    held.into_iter()
        .flat_map(|(worker, list)| {
            list.into_iter()
                .map(move |split| (split.to_owned(), worker.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}{i:02}")).collect()
    }

    fn counts(a: &Assignment) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for owner in a.owners.values() {
            *c.entry(owner.clone()).or_default() += 1;
        }
        c
    }

    fn moved(a: &Assignment, b: &Assignment) -> usize {
        a.owners
            .iter()
            .filter(|(split, owner)| b.owners.get(*split).is_some_and(|o| o != *owner))
            .count()
    }

    #[test]
    fn first_assignment_is_balanced_and_complete() {
        let splits = names("s", 10);
        let a = assign(&splits, &names("w", 3), &Assignment::default());
        assert_eq!(a.owners.len(), 10);
        assert_eq!(a.generation, 1);
        let mut c: Vec<usize> = counts(&a).into_values().collect();
        c.sort();
        assert_eq!(c, vec![3, 3, 4]);
    }

    #[test]
    fn same_inputs_keep_the_generation() {
        let splits = names("s", 7);
        let workers = names("w", 3);
        let a = assign(&splits, &workers, &Assignment::default());
        let b = assign(&splits, &workers, &a);
        assert_eq!(a, b);
    }

    #[test]
    fn a_worker_leaving_moves_only_its_splits() {
        let splits = names("s", 12);
        let a = assign(&splits, &names("w", 4), &Assignment::default());
        let leaving = "w01";
        let theirs: BTreeSet<String> = a.splits_of(leaving).map(str::to_owned).collect();
        let rest: Vec<String> = names("w", 4).into_iter().filter(|w| w != leaving).collect();
        let b = assign(&splits, &rest, &a);
        assert_eq!(b.generation, a.generation + 1);
        assert_eq!(b.owners.len(), 12);
        assert!(b.owners.values().all(|o| o != leaving));
        for (split, owner) in &a.owners {
            if !theirs.contains(split) {
                assert_eq!(&b.owners[split], owner, "{split} moved needlessly");
            }
        }
        assert_eq!(moved(&a, &b), theirs.len());
        assert!(counts(&b).values().all(|c| *c == 4));
    }

    #[test]
    fn a_worker_joining_takes_only_its_share() {
        let splits = names("s", 12);
        let a = assign(&splits, &names("w", 3), &Assignment::default());
        let b = assign(&splits, &names("w", 4), &a);
        assert_eq!(
            moved(&a, &b),
            3,
            "the new worker takes 12/4 splits, nothing else moves"
        );
        assert!(counts(&b).values().all(|c| *c == 3));
    }

    #[test]
    fn uneven_shares_stay_with_their_holders() {
        // 5 splits on 2 workers: 3 + 2. Adding a split must not move an existing one.
        let a = assign(&names("s", 5), &names("w", 2), &Assignment::default());
        let b = assign(&names("s", 6), &names("w", 2), &a);
        assert_eq!(moved(&a, &b), 0);
        assert!(counts(&b).values().all(|c| *c == 3));
    }

    #[test]
    fn removed_splits_are_dropped_and_no_workers_keeps_owners() {
        let a = assign(&names("s", 4), &names("w", 2), &Assignment::default());
        let b = assign(&names("s", 3), &[], &a);
        assert_eq!(b.owners.len(), 3);
        for (split, owner) in &b.owners {
            assert_eq!(&a.owners[split], owner);
        }
        assert_eq!(b.generation, a.generation + 1);
    }
}
