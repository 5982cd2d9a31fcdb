//! The durable pull consumer behind each JetStream split, created by the operator so that the
//! consumers, and each split's lag, are there before the first worker starts.
//!
//! How a split is read is not defined here: the configuration and the rule for keeping a live
//! consumer come from `jetflow_nats::consumer`, the definition the worker uses too, so a
//! consumer the operator made is exactly what the worker wants and is read as it is. A new
//! consumer starts after the checkpointed position when there is one, else at the spec's start.
//! A live consumer is left alone when it agrees, updated in place when only settings JetStream
//! changes in place differ (the ack wait after a new checkpoint interval), and deleted and
//! created again after the checkpoint when it cannot serve (made by an older release with other
//! settings, or by hand); where a worker reads it is the worker's to judge, as it does on
//! every open. Consumers of splits that are gone, and all of a pipeline's consumers when it is
//! deleted, are removed.

use std::collections::{BTreeMap, BTreeSet};

use async_nats::jetstream::consumer::{Info, pull};
use async_nats::jetstream::context::ConsumerInfoErrorKind;
use futures::TryStreamExt;
use jetflow_crds::PipelineSpec;
use jetflow_crds::split::{Split, consumer_name};
use jetflow_nats::consumer::{self as shared, Acks, Start, Verdict};

use crate::{ConsumerAction, Error, Result};

pub use jetflow_nats::consumer::{MAX_ACK_PENDING, ack_wait};

/// The consumer configuration of `split` (the shared definition); `position` is the split's
/// checkpointed position, `acks` what the source stream's retention calls for
/// ([`Acks::for_retention`]).
pub fn config(
    namespace: &str,
    pipeline: &str,
    spec: &PipelineSpec,
    split: &Split,
    position: Option<u64>,
    acks: Acks,
) -> Result<pull::Config> {
    let name = consumer_name(namespace, pipeline, &split.name);
    let start = Start::from_checkpoint(
        position,
        &spec
            .source
            .jetstream
            .as_ref()
            .map(|js| js.start.clone())
            .unwrap_or_default(),
    );
    shared::config(&name, split, &start, acks, spec.checkpoint.interval.get()).map_err(|e| {
        Error::Consumer {
            stream: spec
                .source
                .jetstream
                .as_ref()
                .map(|js| js.stream.clone())
                .unwrap_or_default(),
            consumer: name.clone(),
            action: ConsumerAction::Configure,
            source: Box::new(e),
        }
    })
}

fn consumer_error(
    stream: &str,
    consumer: &str,
    action: ConsumerAction,
) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync>) -> Error {
    let stream = stream.to_owned();
    let consumer = consumer.to_owned();
    move |source| Error::Consumer {
        stream,
        consumer,
        action,
        source,
    }
}

/// What [`ensure`] did.
#[derive(Debug, Default)]
pub struct Ensured {
    /// Each split's consumer, by split name.
    pub infos: BTreeMap<String, Info>,
    /// Consumers created (missing, or recreated because they could not serve).
    pub created: Vec<String>,
    /// Splits left without a consumer because a consumer limit leaves no room for it.
    pub blocked: Vec<String>,
    /// The limit that left no room, when one did.
    pub limit: Option<Limit>,
}

/// A limit on the consumers of the source stream: the stream's own `max_consumers`, or the
/// account's JetStream limit on consumers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Which limit: `the stream's max_consumers` or `the account's max consumers`.
    pub what: &'static str,
    /// The limit.
    pub max: i64,
    /// Consumers counted against it when the reconcile looked.
    pub used: i64,
}

impl Limit {
    /// Consumers it still allows.
    fn room(&self) -> i64 {
        (self.max - self.used).max(0)
    }
}

/// The tightest consumer limit on `stream`: its `max_consumers` and the account's limit
/// (`account`, when it could be read), each with what it already counts; `None` when neither
/// is limited. A server-wide default neither shows is met only when a create is refused.
pub fn tightest_limit(
    stream: &async_nats::jetstream::stream::Info,
    account: Option<&async_nats::jetstream::account::Account>,
) -> Option<Limit> {
    let of_stream = (stream.config.max_consumers > 0).then(|| Limit {
        what: "the stream's max_consumers",
        max: i64::from(stream.config.max_consumers),
        used: i64::try_from(stream.state.consumer_count).unwrap_or(i64::MAX),
    });
    let of_account = account.and_then(|a| {
        a.limits.max_consumers.filter(|m| *m > 0).map(|max| Limit {
            what: "the account's max consumers",
            max,
            used: i64::try_from(a.consumers).unwrap_or(i64::MAX),
        })
    });
    [of_stream, of_account]
        .into_iter()
        .flatten()
        .min_by_key(Limit::room)
}

/// Makes sure every desired consumer exists and can serve, creating, updating or recreating it
/// as the shared rule says. New consumers are made only while `limit` leaves room (checked
/// before the server refuses them); the splits beyond it, and those the server refuses for a
/// limit (JetStream error 10026), are left out in [`Ensured::blocked`] instead of failing the
/// reconcile, so that the splits that have a consumer run.
pub async fn ensure(
    stream: &async_nats::jetstream::stream::Stream,
    stream_name: &str,
    desired: &BTreeMap<String, pull::Config>,
    limit: Option<Limit>,
) -> Result<Ensured> {
    let mut out = Ensured::default();
    let mut room = limit.as_ref().map(Limit::room);
    for (split, want) in desired {
        let name = want.durable_name.clone().unwrap_or_default();
        let read = |e: async_nats::jetstream::context::ConsumerInfoError| {
            consumer_error(stream_name, &name, ConsumerAction::Read)(Box::new(e))
        };
        let create = async |out: &mut Ensured, room: &mut Option<i64>| -> Result<Option<Info>> {
            if *room == Some(0) {
                return Ok(None);
            }
            match stream.create_consumer(want.clone()).await {
                Ok(_) => {}
                Err(e) if shared::refused_for_limit(&e) => {
                    *room = Some(0);
                    return Ok(None);
                }
                Err(e) => {
                    return Err(consumer_error(stream_name, &name, ConsumerAction::Create)(
                        Box::new(e),
                    ));
                }
            }
            if let Some(r) = room.as_mut() {
                *r -= 1;
            }
            out.created.push(name.clone());
            stream.consumer_info(&name).await.map(Some).map_err(read)
        };
        let info = match stream.consumer_info(&name).await {
            Ok(info) => match shared::judge_settings(&info.config, want) {
                Verdict::Use => Some(info),
                Verdict::Update => {
                    let _: async_nats::jetstream::consumer::Consumer<pull::Config> = stream
                        .update_consumer(shared::update_of(&info.config, want))
                        .await
                        .map_err(|e| {
                            consumer_error(stream_name, &name, ConsumerAction::Update)(Box::new(e))
                        })?;
                    Some(stream.consumer_info(&name).await.map_err(read)?)
                }
                Verdict::Recreate(why) => {
                    tracing::info!(consumer = %name, why, "consumer cannot serve the split; recreating it after the checkpoint");
                    stream.delete_consumer(&name).await.map_err(|e| {
                        consumer_error(stream_name, &name, ConsumerAction::Delete)(Box::new(e))
                    })?;
                    // The deleted one made room for its successor.
                    if let Some(r) = room.as_mut() {
                        *r += 1;
                    }
                    create(&mut out, &mut room).await?
                }
            },
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                create(&mut out, &mut room).await?
            }
            Err(e) => return Err(read(e)),
        };
        match info {
            Some(info) => {
                out.infos.insert(split.clone(), info);
            }
            None => out.blocked.push(split.clone()),
        }
    }
    if !out.blocked.is_empty() {
        out.limit = limit;
    }
    Ok(out)
}

/// Whether `consumer` belongs to the pipeline: its name prefix followed by exactly the 16 hex
/// digits of a split hash (so pipeline `a` never claims the consumers of pipeline `a_b`).
pub fn belongs(namespace: &str, pipeline: &str, consumer: &str) -> bool {
    let probe = consumer_name(namespace, pipeline, "");
    let prefix = &probe[..probe.len() - 16];
    consumer
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 16 && rest.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Deletes the pipeline's consumers on `stream` that are not in `keep`; returns their names.
pub async fn remove_others(
    stream: &async_nats::jetstream::stream::Stream,
    stream_name: &str,
    namespace: &str,
    pipeline: &str,
    keep: &BTreeSet<String>,
) -> Result<Vec<String>> {
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(|e| consumer_error(stream_name, "*", ConsumerAction::List)(Box::new(e)))?;
    let mut removed = Vec::new();
    for name in names {
        if belongs(namespace, pipeline, &name) && !keep.contains(&name) {
            stream.delete_consumer(&name).await.map_err(|e| {
                consumer_error(stream_name, &name, ConsumerAction::Delete)(Box::new(e))
            })?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// A split's lag from its consumer: messages not yet delivered, plus, for a consumer that
/// takes acknowledgements, delivered but not yet acknowledged (acknowledged means
/// checkpointed). A consumer without acks counts none pending.
pub fn lag(info: &Info) -> u64 {
    info.num_pending + info.num_ack_pending as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::fixtures;
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};

    #[test]
    fn consumers_of_limits_streams_take_no_acks_and_wait_longer_than_the_interval() {
        let p = fixtures::pipeline();
        let split = Split {
            name: "orders.eu".into(),
            subject: "orders.eu".into(),
        };
        let c = config("shop", "orders-copy", &p.spec, &split, None, Acks::None).unwrap();
        assert_eq!(c.ack_policy, AckPolicy::None);
        assert!(c.ack_wait > p.spec.checkpoint.interval.get() * 2);
        assert_eq!(c.deliver_policy, DeliverPolicy::All);
        assert_eq!(c.filter_subject, "orders.eu");
        let resumed = config(
            "shop",
            "orders-copy",
            &p.spec,
            &split,
            Some(41),
            Acks::AfterCheckpoint,
        )
        .unwrap();
        assert_eq!(resumed.ack_policy, AckPolicy::All);
        assert_eq!(
            resumed.deliver_policy,
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
    }

    #[test]
    fn consumer_ownership_is_exact() {
        let mine = consumer_name("ns", "a", "x.y");
        let other = consumer_name("ns", "a_b", "x.y");
        assert!(belongs("ns", "a", &mine));
        assert!(!belongs("ns", "a", &other));
        assert!(belongs("ns", "a_b", &other));
    }
}
