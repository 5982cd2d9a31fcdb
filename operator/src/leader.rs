//! Leader election through a `coordination.k8s.io/v1` Lease, so that two operator replicas are
//! safe: only the holder reconciles.
//!
//! Each round reads the Lease and writes it only with the resourceVersion it read: the holder
//! renews it; another replica takes it over once `renewTime + leaseDurationSeconds` has passed
//! without a renewal; a write that loses a race (HTTP 409) simply means "not leader this round".
//! A holder that cannot renew within the lease duration must stop reconciling before another
//! replica may take over, so [`run`] reports the loss and the operator exits (the pod restarts
//! and competes again). On shutdown the holder releases the Lease so the standby takes over at
//! once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use crate::{Error, Result};

/// One replica's view of the Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    /// A lock on Lease `name` for the replica `identity` (its pod name).
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    fn error(&self) -> impl Fn(kube::Error) -> Error + '_ {
        move |source| Error::Lease {
            name: self.name.clone(),
            source,
        }
    }

    fn spec(
        &self,
        now: jiff::Timestamp,
        acquired: Option<MicroTime>,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One round: acquires, renews or takes over the Lease. Returns whether this replica holds
    /// it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = jiff::Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.name).await.map_err(self.error())? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(self.error()(e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or("");
        let mine = holder == self.identity;
        let expired = spec.renew_time.as_ref().is_none_or(|renewed| {
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
            renewed.0 + jiff::SignedDuration::from_secs(duration) < now
        });
        if !mine && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + i32::from(!mine);
        let acquired = if mine {
            spec.acquire_time.clone()
        } else {
            None
        };
        let mut next = lease.clone();
        next.spec = Some(self.spec(now, acquired, transitions));
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(self.error()(e)),
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby takes over without waiting for
    /// it to expire.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await.map_err(self.error())? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(self.error()(e)),
        }
    }
}

/// Why [`run`] gave up leadership.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The renewals failed (the API server unreachable, a refused write) for longer than the
    /// renew deadline.
    #[error("lost the leader lease {lease}: not renewed within {deadline:?}: {source}")]
    RenewFailed {
        /// The Lease.
        lease: String,
        /// How long renewals were tried.
        deadline: Duration,
        /// The last renewal's error.
        source: Error,
    },
    /// Another replica wrote the Lease (it took it over, or won the race for it) and this one
    /// could not renew it within the renew deadline.
    #[error(
        "lost the leader lease {lease}: not renewed within {deadline:?}; another replica holds it"
    )]
    TakenOver {
        /// The Lease.
        lease: String,
        /// How long renewals were tried.
        deadline: Duration,
    },
}

/// Competes for the Lease every `retry` until `stop` fires, publishing leadership on `leading`.
/// Returns an error when leadership, once held, could not be renewed for the lease duration.
pub async fn run(
    lock: LeaseLock,
    retry: Duration,
    leading: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), LeaderError> {
    let mut last_renewal: Option<tokio::time::Instant> = None;
    loop {
        let (held, failure) = match lock.try_acquire_or_renew().await {
            Ok(held) => (held, None),
            Err(error) => {
                tracing::warn!(%error, "leader election round failed");
                (false, Some(error))
            }
        };
        if held {
            if !*leading.borrow() {
                tracing::info!(identity = %lock.identity, lease = %lock.name, "became leader");
            }
            last_renewal = Some(tokio::time::Instant::now());
            let _ = leading.send(true);
        } else if *leading.borrow() {
            // Stop before the lease can expire in the eyes of another replica (a renew deadline of
            // two thirds of the duration, as client-go does).
            let overdue = last_renewal.is_none_or(|t| t.elapsed() >= lock.duration * 2 / 3);
            if overdue {
                let _ = leading.send(false);
                let lease = lock.name.clone();
                let deadline = lock.duration * 2 / 3;
                return Err(match failure {
                    Some(source) => LeaderError::RenewFailed {
                        lease,
                        deadline,
                        source,
                    },
                    None => LeaderError::TakenOver { lease, deadline },
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(retry) => {}
            _ = stop.changed() => {
                if *leading.borrow() {
                    let _ = lock.release().await;
                }
                return Ok(());
            }
        }
    }
}
