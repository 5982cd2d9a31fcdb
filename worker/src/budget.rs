//! The worker's memory budget, shared by the splits it runs: the bytes its pulls, its reader
//! channels, its step outcomes and its windows hold are bounded per worker, not only per split.
//!
//! Each running split gets an equal share of every budget (the budget divided by the number of
//! running splits, never more than one split's own bound), taken afresh each time it is used, so
//! a split that starts or stops moves the shares of the others. A share is only an upper bound
//! on what one split holds: no split ever waits for another's bytes, and a split holding nothing
//! always takes one message, however large (see [`crate::pipeline::read`] and
//! [`crate::split`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Payload bytes the pulls of all splits ask for at most together (besides their message
/// counts): one split alone asks for up to this much per pull.
pub const PULL_BYTES: usize = 1 << 20;
/// The least a split's pull asks for, however many splits run.
pub const MIN_PULL_BYTES: usize = 128 << 10;
/// Payload bytes the reader channels of all splits hold at most together (a channel with
/// nothing in it always takes one message).
pub const READ_AHEAD_BYTES: usize = 1 << 20;
/// Payload bytes the windows of all splits keep alive at most together, besides each split's
/// own bound ([`crate::split::PENDING_BYTES`]).
pub const PENDING_BYTES: usize = 2 << 20;
/// Bytes of step outcomes (outputs evaluated but not yet taken into a window) the evaluator
/// threads of all splits hold at most together (each always holds one message's outcome,
/// however large): a fan-out of thousands of outputs per message is evaluated only as far
/// ahead as the window takes it.
pub const STEP_RESULTS_BYTES: usize = 4 << 20;

/// Counts the running splits of a worker and divides its byte budgets among them.
#[derive(Clone, Debug, Default)]
pub struct Budget {
    running: Arc<AtomicUsize>,
}

impl Budget {
    /// A budget with no split running.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one more running split until the returned guard is dropped.
    pub fn join(&self) -> Member {
        self.running.fetch_add(1, Ordering::AcqRel);
        Member {
            running: self.running.clone(),
        }
    }

    /// The splits running now (at least one: whoever asks counts).
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire).max(1)
    }

    /// One split's share of `total` bytes, at most `cap`.
    pub fn share(&self, total: usize, cap: usize) -> usize {
        (total / self.running()).min(cap)
    }

    /// The payload bytes a split's pull asks for now: its share of [`PULL_BYTES`], at least
    /// [`MIN_PULL_BYTES`].
    pub fn pull_bytes(&self) -> usize {
        self.share(PULL_BYTES, PULL_BYTES).max(MIN_PULL_BYTES)
    }

    /// The payload bytes a split's reader channel holds at most now.
    pub fn read_ahead_bytes(&self) -> usize {
        self.share(READ_AHEAD_BYTES, READ_AHEAD_BYTES)
    }

    /// The bytes of step outcomes a split's evaluator holds ahead of it at most now.
    pub fn step_results_bytes(&self) -> usize {
        self.share(STEP_RESULTS_BYTES, STEP_RESULTS_BYTES)
    }

    /// The payload bytes a split's window keeps alive at most now: its share of
    /// [`PENDING_BYTES`], at most `cap` (the split's own bound).
    pub fn pending_bytes(&self, cap: usize) -> usize {
        self.share(PENDING_BYTES, cap)
    }
}

/// A running split, counted in its worker's [`Budget`] until dropped.
#[derive(Debug)]
pub struct Member {
    running: Arc<AtomicUsize>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_shrink_with_the_running_splits_and_grow_back_when_they_stop() {
        let budget = Budget::new();
        let first = budget.join();
        assert_eq!(budget.pull_bytes(), PULL_BYTES);
        assert_eq!(budget.read_ahead_bytes(), READ_AHEAD_BYTES);
        assert_eq!(budget.pending_bytes(1 << 20), 1 << 20);
        let others: Vec<Member> = (0..3).map(|_| budget.join()).collect();
        assert_eq!(budget.pull_bytes(), PULL_BYTES / 4);
        assert_eq!(budget.read_ahead_bytes(), READ_AHEAD_BYTES / 4);
        assert_eq!(budget.pending_bytes(1 << 20), PENDING_BYTES / 4);
        let many: Vec<Member> = (0..60).map(|_| budget.join()).collect();
        assert_eq!(budget.pull_bytes(), MIN_PULL_BYTES);
        drop(many);
        drop(others);
        assert_eq!(budget.pull_bytes(), PULL_BYTES);
        drop(first);
        assert_eq!(budget.running(), 1);
    }
}
