//! One checkpoint file written by three writers at once, each through its own file handle and
//! committer, as three worker processes sharing `--checkpoint-dir` do: no commit is lost (each
//! successful one moves the id by exactly one and keeps the other writers' splits), and a
//! writer holding an older assignment generation is refused.

use std::sync::Arc;

use jetflow_crds::checkpoint::SplitPosition;
use jetflow_worker::checkpoint::{CheckpointStore, Committer, FileStore, StoreError};

const COMMITS: u64 = 100;

fn update(
    split: &str,
    position: u64,
    owner: &str,
    generation: u64,
) -> std::collections::BTreeMap<String, SplitPosition> {
    std::collections::BTreeMap::from([(
        split.to_owned(),
        SplitPosition {
            position,
            owner: Some(owner.to_owned()),
            generation,
            ..Default::default()
        },
    )])
}

#[test]
fn three_concurrent_writers_lose_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("default").join("shared.json");
    let writers: Vec<_> = ["w1", "w2", "w3"]
        .into_iter()
        .map(|worker| {
            let path = path.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let store: Arc<dyn CheckpointStore> = Arc::new(FileStore::at(path));
                    let mut committer = Committer::open(store).await.unwrap();
                    let mut gave_up = 0u32;
                    for position in 1..=COMMITS {
                        let split = format!("split-{worker}");
                        // A commit that runs out of conflict retries is tried again, as the
                        // runner does at its next interval.
                        loop {
                            match committer.commit(&update(&split, position, worker, 1)).await {
                                Ok(_) => break,
                                Err(StoreError::Conflict { .. }) => gave_up += 1,
                                Err(e) => panic!("{worker}: {e}"),
                            }
                        }
                    }
                    gave_up
                })
            })
        })
        .collect();
    let gave_up: u32 = writers.into_iter().map(|w| w.join().unwrap()).sum();

    let stored = FileStore::at(&path).load_blocking().unwrap().checkpoint;
    assert_eq!(stored.id, 3 * COMMITS, "a commit was lost: {stored:?}");
    for worker in ["w1", "w2", "w3"] {
        let split = &stored.splits[&format!("split-{worker}")];
        assert_eq!(split.position, COMMITS);
        assert_eq!(split.owner.as_deref(), Some(worker));
    }
    eprintln!(
        "{} commits by three writers; {gave_up} ran out of conflict retries and were tried again",
        3 * COMMITS
    );
}

#[tokio::test]
async fn a_stale_owner_cannot_overwrite_a_newer_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.json");
    let old: Arc<dyn CheckpointStore> = Arc::new(FileStore::at(&path));
    let new: Arc<dyn CheckpointStore> = Arc::new(FileStore::at(&path));
    let mut stale = Committer::open(old).await.unwrap();
    stale.commit(&update("s", 10, "w3", 1)).await.unwrap();
    let mut owner = Committer::open(new).await.unwrap();
    owner.commit(&update("s", 12, "w1", 2)).await.unwrap();
    // w3 has not seen generation 2 yet and commits further: refused, the file keeps w1's.
    let err = stale.commit(&update("s", 50, "w3", 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err}");
    let stored = FileStore::at(&path).load_blocking().unwrap().checkpoint;
    assert_eq!(stored.splits["s"].position, 12);
    assert_eq!(stored.splits["s"].owner.as_deref(), Some("w1"));
}
