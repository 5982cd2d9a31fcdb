//! Leader election on a coordination Lease in the in-memory API: one holder at a time, renewal,
//! takeover after expiry, a lost race treated as "not leader", release on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jetflow_operator::leader::{self, LeaseLock};
use jetflow_operator::permissions::{Scope, allows};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_fake_client::{ClientBuilder, interceptor};
use tokio::sync::watch;

async fn leases() -> Api<Lease> {
    let client = ClientBuilder::new().build().await.unwrap();
    Api::namespaced(client, "jetflow-system")
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

#[tokio::test]
async fn one_replica_leads_and_the_other_takes_over_after_expiry() {
    let api = leases().await;
    let ttl = Duration::from_secs(1);
    let a = LeaseLock::new(api.clone(), "jetflow-operator", "operator-a", ttl);
    let b = LeaseLock::new(api.clone(), "jetflow-operator", "operator-b", ttl);

    assert!(
        a.try_acquire_or_renew().await.unwrap(),
        "a creates the Lease"
    );
    assert!(
        !b.try_acquire_or_renew().await.unwrap(),
        "b waits while a's Lease is fresh"
    );
    assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
    let lease = api.get("jetflow-operator").await.unwrap();
    assert_eq!(holder(&lease).as_deref(), Some("operator-a"));
    assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(0));

    // a stops renewing; once the Lease expires, b takes it over.
    tokio::time::sleep(ttl + Duration::from_millis(1100)).await;
    assert!(b.try_acquire_or_renew().await.unwrap());
    let lease = api.get("jetflow-operator").await.unwrap();
    assert_eq!(holder(&lease).as_deref(), Some("operator-b"));
    assert_eq!(lease.spec.as_ref().unwrap().lease_transitions, Some(1));
    assert!(!a.try_acquire_or_renew().await.unwrap(), "a lost it");

    // b shuts down and releases: a leads at once.
    b.release().await.unwrap();
    assert!(a.try_acquire_or_renew().await.unwrap());
    assert!(allows(
        "coordination.k8s.io",
        "leases",
        "update",
        Scope::OperatorNamespace
    ));
}

#[tokio::test]
async fn a_takeover_that_loses_the_race_is_not_leadership() {
    // Replica c takes the expired Lease over between b's read and b's write: b's write carries
    // the resourceVersion it read, the API refuses it, and b does not lead.
    let armed = Arc::new(AtomicBool::new(false));
    let interceptors = {
        let armed = armed.clone();
        interceptor::Funcs::new().replace(move |ctx| {
            if armed.swap(false, Ordering::SeqCst) {
                let mut lease: Lease = serde_json::from_value(ctx.object.clone())
                    .map_err(|e| kube_fake_client::Error::Internal(e.to_string()))?;
                lease.spec.as_mut().unwrap().holder_identity = Some("operator-c".into());
                ctx.client
                    .update::<Lease>(ctx.namespace, &lease, &Default::default())?;
            }
            Ok(None)
        })
    };
    let client = ClientBuilder::new()
        .with_interceptor_funcs(interceptors)
        .build()
        .await
        .unwrap();
    let api: Api<Lease> = Api::namespaced(client, "jetflow-system");
    let ttl = Duration::from_secs(1);
    let a = LeaseLock::new(api.clone(), "l", "operator-a", ttl);
    let b = LeaseLock::new(api.clone(), "l", "operator-b", ttl);
    assert!(a.try_acquire_or_renew().await.unwrap());
    tokio::time::sleep(ttl + Duration::from_millis(1100)).await;

    armed.store(true, Ordering::SeqCst);
    assert!(!b.try_acquire_or_renew().await.unwrap(), "b lost the race");
    assert_eq!(
        holder(&api.get("l").await.unwrap()).as_deref(),
        Some("operator-c")
    );
}

#[tokio::test]
async fn the_election_loop_publishes_leadership_and_releases_on_stop() {
    let api = leases().await;
    let lock = LeaseLock::new(api.clone(), "loop", "operator-a", Duration::from_secs(15));
    let (leading_tx, mut leading) = watch::channel(false);
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(leader::run(
        lock,
        Duration::from_millis(50),
        leading_tx,
        stop_rx,
    ));
    tokio::time::timeout(Duration::from_secs(5), leading.wait_for(|l| *l))
        .await
        .expect("became leader")
        .unwrap();
    stop_tx.send(true).unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(holder(&api.get("loop").await.unwrap()), None, "released");
}

#[tokio::test]
async fn a_leader_whose_lease_another_replica_took_stops_leading_with_a_typed_error() {
    let api = leases().await;
    let ttl = Duration::from_secs(1);
    let lock = LeaseLock::new(api.clone(), "taken", "operator-a", ttl);
    let (leading_tx, mut leading) = watch::channel(false);
    let (_stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(leader::run(
        lock,
        Duration::from_millis(50),
        leading_tx,
        stop_rx,
    ));
    tokio::time::timeout(Duration::from_secs(5), leading.wait_for(|l| *l))
        .await
        .expect("became leader")
        .unwrap();
    // Another replica writes the Lease as its own and keeps renewing it.
    let other = LeaseLock::new(api.clone(), "taken", "operator-b", Duration::from_secs(30));
    let mut lease = api.get("taken").await.unwrap();
    let spec = lease.spec.as_mut().unwrap();
    spec.holder_identity = Some("operator-b".into());
    spec.lease_duration_seconds = Some(30);
    api.replace("taken", &Default::default(), &lease)
        .await
        .unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let _ = other.try_acquire_or_renew().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            if task.is_finished() {
                return task.await.unwrap();
            }
        }
    })
    .await
    .expect("the election loop ends")
    .expect_err("leadership was lost");
    assert!(
        matches!(&error, leader::LeaderError::TakenOver { lease, .. } if lease == "taken"),
        "{error}"
    );
    assert!(!*leading.borrow(), "leadership withdrawn");
}
