//! The ConfigMap checkpoint store against an in-memory Kubernetes API with resourceVersions and
//! conflicts: a round trip that keeps the operator's metadata, compare-and-swap conflicts
//! between writers in different pods (both writes land, no position moves back, a stale
//! generation is refused), a missing ConfigMap, and calls within the worker's Role.
//!
//! The tests run on a single-threaded runtime: the writers still interleave at every request,
//! which is where conflicts come from, while each request is handled whole by the fake API.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::kube_support::{FakeApi, NS};
use jetflow_crds::checkpoint::{MergeError, SplitPosition};
use jetflow_crds::names;
use jetflow_worker::checkpoint::{
    CheckpointStore, Committer, ConfigMapStore, StoreError, Stored, Version,
};

fn pos(position: u64, owner: &str, generation: u64) -> SplitPosition {
    SplitPosition {
        position,
        owner: Some(owner.to_owned()),
        generation,
        ..Default::default()
    }
}

fn updates(list: &[(&str, SplitPosition)]) -> BTreeMap<String, SplitPosition> {
    list.iter()
        .map(|(s, p)| ((*s).to_owned(), p.clone()))
        .collect()
}

fn store(api: &FakeApi, pipeline: &str) -> Arc<dyn CheckpointStore> {
    Arc::new(ConfigMapStore::new(api.worker_client(), NS, pipeline))
}

#[tokio::test]
async fn configmap_store_round_trip_keeps_the_operators_metadata() {
    let api = FakeApi::new().await;
    let created = api.create_checkpoint("orders").await;
    let store = store(&api, "orders");

    let first = store.load().await.unwrap();
    assert_eq!(first.checkpoint.id, 0);
    assert!(first.checkpoint.splits.is_empty());
    assert_eq!(
        first.version,
        Some(Version(created.metadata.resource_version.clone().unwrap()))
    );

    let mut committer = Committer::open(store.clone()).await.unwrap();
    committer
        .commit(&updates(&[
            ("orders.eu", pos(10, "w-0", 1)),
            ("orders.us", pos(7, "w-0", 1)),
        ]))
        .await
        .unwrap();
    committer
        .commit(&updates(&[("orders.eu", pos(25, "w-0", 1))]))
        .await
        .unwrap();

    // What another reader (a restarted pod, the operator) sees.
    let stored = api.checkpoint("orders").await;
    assert_eq!(stored.id, 2);
    assert_eq!(stored.splits["orders.eu"], pos(25, "w-0", 1));
    assert_eq!(stored.splits["orders.us"], pos(7, "w-0", 1));
    let reread = self::store(&api, "orders").load().await.unwrap();
    assert_eq!(reread.checkpoint, stored);

    let cm = api
        .config_maps()
        .get(&names::checkpoint_config_map("orders"))
        .await
        .unwrap();
    assert_eq!(cm.metadata.labels, created.metadata.labels);
    assert_eq!(cm.metadata.annotations, created.metadata.annotations);
    assert_eq!(
        reread.version,
        Some(Version(cm.metadata.resource_version.unwrap()))
    );
}

#[tokio::test]
async fn configmap_store_refuses_a_write_based_on_an_old_version() {
    let api = FakeApi::new().await;
    api.create_checkpoint("orders").await;
    let store = store(&api, "orders");
    let base = store.load().await.unwrap();
    let next = base
        .checkpoint
        .merged(&updates(&[("a", pos(5, "w-0", 1))]), jiff::Timestamp::now())
        .unwrap();
    let v1 = store.write(base.version.as_ref(), &next).await.unwrap();
    assert_ne!(Some(&v1), base.version.as_ref());

    // Same base again: the ConfigMap has moved on.
    let older = base
        .checkpoint
        .merged(&updates(&[("a", pos(3, "w-0", 1))]), jiff::Timestamp::now())
        .unwrap();
    let refused = store.write(base.version.as_ref(), &older).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    // "Nothing stored yet" no longer holds either.
    let refused = store.write(None, &older).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert_eq!(api.checkpoint("orders").await.splits["a"].position, 5);
}

/// Two pods open the checkpoint at the same version and commit: the second write is refused by
/// the API server (409), re-read and merged, so both land.
#[tokio::test]
async fn concurrent_writers_both_land_after_a_conflict() {
    let api = FakeApi::new().await;
    api.create_checkpoint("orders").await;
    let mut a = Committer::open(store(&api, "orders")).await.unwrap();
    let mut b = Committer::open(store(&api, "orders")).await.unwrap();

    a.commit(&updates(&[("orders.eu", pos(40, "w-a", 3))]))
        .await
        .unwrap();
    assert_eq!(api.count_status(409), 0);
    b.commit(&updates(&[("orders.us", pos(17, "w-b", 3))]))
        .await
        .unwrap();
    assert_eq!(api.count_status(409), 1, "b's first write conflicted");

    let stored = api.checkpoint("orders").await;
    assert_eq!(stored.splits["orders.eu"], pos(40, "w-a", 3));
    assert_eq!(stored.splits["orders.us"], pos(17, "w-b", 3));
    assert_eq!(stored.id, 2);
}

/// A writer whose view is older than the ConfigMap cannot move a split back, neither through
/// the conflict retry (its merge is refused) nor by holding an older assignment generation.
#[tokio::test]
async fn stale_writers_never_move_a_position_back() {
    let api = FakeApi::new().await;
    api.create_checkpoint("orders").await;
    let mut new_owner = Committer::open(store(&api, "orders")).await.unwrap();
    let mut old_owner = Committer::open(store(&api, "orders")).await.unwrap();

    new_owner
        .commit(&updates(&[("orders.eu", pos(50, "w-new", 4))]))
        .await
        .unwrap();

    // Same generation, lower position, on a stale base: 409, re-read, merge refuses.
    let backwards = old_owner
        .commit(&updates(&[("orders.eu", pos(40, "w-old", 4))]))
        .await;
    match backwards {
        Err(StoreError::Refused {
            source:
                MergeError::Backwards {
                    committed: 50,
                    proposed: 40,
                    ..
                },
            ..
        }) => {}
        other => panic!("expected a backwards refusal, got {other:?}"),
    }
    assert_eq!(api.count_status(409), 1);

    // An older assignment generation is refused even with a higher position.
    let stale = old_owner
        .commit(&updates(&[("orders.eu", pos(90, "w-old", 3))]))
        .await;
    match stale {
        Err(StoreError::Refused {
            source:
                MergeError::StaleGeneration {
                    committed: 4,
                    proposed: 3,
                    ..
                },
            ..
        }) => {}
        other => panic!("expected a stale generation refusal, got {other:?}"),
    }

    let stored = api.checkpoint("orders").await;
    assert_eq!(stored.splits["orders.eu"], pos(50, "w-new", 4));
    assert_eq!(stored.id, 1);
}

/// Three pods commit their own splits as fast as they can while a reader watches the
/// ConfigMap: every commit lands eventually (a checkpoint that ran out of conflict retries is
/// taken again, as the runner's next interval would), and no reader ever sees a position go
/// down.
#[tokio::test]
async fn many_writers_lose_nothing_and_positions_only_grow() {
    const ROUNDS: u64 = 30;
    let api = Arc::new(FakeApi::new().await);
    api.create_checkpoint("orders").await;

    let writers = ["w-0", "w-1", "w-2"].map(|worker| {
        let api = api.clone();
        async move {
            let mut committer = Committer::open(store(&api, "orders")).await.unwrap();
            let split = format!("orders.{worker}");
            let mut exhausted = 0;
            for round in 1..=ROUNDS {
                loop {
                    match committer
                        .commit(&updates(&[(split.as_str(), pos(round * 10, worker, 1))]))
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => exhausted += 1,
                        Err(e) => panic!("{worker}: {e}"),
                    }
                }
                tokio::task::yield_now().await;
            }
            exhausted
        }
    });
    let reader = {
        let api = api.clone();
        async move {
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            let mut last_id = 0;
            let mut reads = 0;
            loop {
                let c = api.checkpoint("orders").await;
                assert!(
                    c.id >= last_id,
                    "checkpoint id went from {last_id} to {}",
                    c.id
                );
                last_id = c.id;
                for (split, p) in &c.splits {
                    let before = seen.insert(split.clone(), p.position).unwrap_or(0);
                    assert!(
                        p.position >= before,
                        "{split} moved back from {before} to {}",
                        p.position
                    );
                }
                reads += 1;
                if c.splits.len() == 3 && c.splits.values().all(|p| p.position == ROUNDS * 10) {
                    return reads;
                }
                tokio::task::yield_now().await;
            }
        }
    };
    // A lost update leaves the reader waiting for a position that never comes.
    let (exhausted, reads) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(futures::future::join_all(writers), reader)
    })
    .await
    .expect("every commit of every writer visible in the ConfigMap within 60 s");
    assert!(reads > 1);

    let stored = api.checkpoint("orders").await;
    for worker in ["w-0", "w-1", "w-2"] {
        assert_eq!(
            stored.splits[&format!("orders.{worker}")],
            pos(ROUNDS * 10, worker, 1)
        );
    }
    // Every commit that landed moved the id by one.
    assert_eq!(stored.id, 3 * ROUNDS);
    assert!(
        api.count_status(409) > 0,
        "the writers never conflicted, so the test proved nothing (commits that gave up: {exhausted:?})"
    );
}

#[tokio::test]
async fn a_missing_checkpoint_config_map_is_a_clear_error() {
    let api = FakeApi::new().await;
    let store = store(&api, "orders");
    let err = store.load().await.unwrap_err();
    assert_eq!(err.category(), "backend");
    let text = err.to_string();
    assert!(
        text.contains("orders-checkpoint") && text.contains("does not exist"),
        "{text}"
    );
    let write = store
        .write(None, &jetflow_crds::checkpoint::Checkpoint::default())
        .await
        .unwrap_err();
    assert!(write.to_string().contains("does not exist"), "{write}");
    // Nothing was created: the worker may not, and did not try.
    assert!(api.calls().iter().all(|c| c.method == "GET"));
    assert!(
        api.config_maps()
            .get_opt(&names::checkpoint_config_map("orders"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_empty_checkpoint_key_reads_as_the_empty_checkpoint() {
    let api = FakeApi::new().await;
    let mut cm = api.create_checkpoint("orders").await;
    cm.data = None;
    api.config_maps()
        .replace(
            &names::checkpoint_config_map("orders"),
            &Default::default(),
            &cm,
        )
        .await
        .unwrap();
    let store = store(&api, "orders");
    let Stored {
        checkpoint,
        version,
    } = store.load().await.unwrap();
    assert_eq!(checkpoint, Default::default());
    assert!(version.is_some());
    let mut committer = Committer::open(store).await.unwrap();
    committer
        .commit(&updates(&[("a", pos(1, "w-0", 0))]))
        .await
        .unwrap();
    assert_eq!(api.checkpoint("orders").await.splits["a"].position, 1);
}

/// The worker's Role allows get, list, watch, update and patch on its checkpoint ConfigMap and
/// nothing on any other name; the store keeps to that.
#[tokio::test]
async fn the_store_only_gets_and_replaces_its_own_config_map() {
    let api = FakeApi::new().await;
    api.create_checkpoint("orders").await;
    let mut a = Committer::open(store(&api, "orders")).await.unwrap();
    let mut b = Committer::open(store(&api, "orders")).await.unwrap();
    for round in 1..=3 {
        a.commit(&updates(&[("x", pos(round, "a", 0))]))
            .await
            .unwrap();
        b.commit(&updates(&[("y", pos(round, "b", 0))]))
            .await
            .unwrap();
    }
    let calls = api.calls();
    assert!(calls.iter().any(|c| c.method == "PUT"));
    for call in &calls {
        assert!(
            matches!(call.method.as_str(), "GET" | "PUT"),
            "unexpected {call:?}"
        );
        assert_eq!(
            call.path,
            format!("/api/v1/namespaces/{NS}/configmaps/orders-checkpoint"),
        );
    }
}
