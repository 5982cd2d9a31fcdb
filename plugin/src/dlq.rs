//! `kubectl jetflow dlq`: the dead letters of a pipeline, read from the JetStream stream that
//! captures its dead-letter subject, and replayed to their source subjects.
//!
//! A replayed message is the dead letter's original payload and headers (without the
//! `Jetflow-*` headers the dead letter added, and without any `Nats-*` header) published to the
//! subject its `Jetflow-Source` header names, with the message id
//! `jetflow-replay-<dlq stream>-<dlq sequence>`: the source stream stores each dead letter once
//! however often it is replayed within its duplicate window, and the pipeline reads it as a new
//! message. Only the dead letters whose `Jetflow-Source` names the pipeline's source stream are
//! listed and replayed: a dead-letter subject may be shared by pipelines of several sources.
//! Nor are those another pipeline of the same source sent: a worker's dead letter carries the
//! message id `<namespace>/<pipeline>:<split hash>:<sequence>:dlq`, naming its pipeline.
//!
//! The replayed message carries `Jetflow-Replay-For: <namespace>/<pipeline>`
//! ([`jetflow_nats::replay`]): every other pipeline reading the source subject skips it, so only
//! the pipeline the letter came from writes it again. Once the source stream confirmed the
//! replayed message, the dead letter is deleted from the dead-letter stream: it is listed no
//! more, and a second replay does not send it again (however long after). A replay that ends
//! between the two (the plugin killed, the delete refused) leaves the letter listed; replaying
//! it again within the source stream's duplicate window stores nothing new (its message id), a
//! replay after the window sends it once more.

use anyhow::{Context as _, Result, bail};
use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use futures::StreamExt;
use jetflow_crds::Pipeline;
use jetflow_nats::source_header::Source;
use kube::ResourceExt;

/// Which dead letters.
#[derive(clap::Args, Debug)]
pub struct Filter {
    /// The Pipeline.
    pipeline: String,
    /// Only dead letters stored at or after this time (RFC 3339).
    #[arg(long)]
    since: Option<jiff::Timestamp>,
    /// Only dead letters of this step (its name, as in the `Jetflow-Error-Step` header).
    #[arg(long)]
    step: Option<String>,
    /// The NATS URL to use instead of the Pipeline's (`spec.connection.url`), for example a
    /// port-forward to the cluster's NATS.
    #[arg(long, env = "JETFLOW_NATS_URL")]
    nats: Option<String>,
}

/// One dead letter.
struct DeadLetter {
    sequence: u64,
    time: jiff::Timestamp,
    headers: HeaderMap,
    payload: bytes::Bytes,
}

impl DeadLetter {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.as_str())
    }

    /// The source message, from the `Jetflow-Source` header.
    fn source(&self) -> Option<Source<'_>> {
        Source::of(&self.headers).ok()
    }
}

/// The JetStream context of the Pipeline's connection, and the Pipeline.
async fn connect(
    client: &kube::Client,
    ns: &str,
    f: &Filter,
) -> Result<(Pipeline, async_nats::jetstream::Context)> {
    let p = crate::pipeline(client, ns, &f.pipeline).await?;
    let mut conn = p.spec.connection.clone().unwrap_or_default();
    if let Some(url) = &f.nats {
        conn.url = Some(url.clone());
    }
    let Some(url) = conn.url.clone() else {
        bail!(
            "Pipeline {} names no NATS URL (spec.connection.url; the operator's default is used): give one with --nats",
            f.pipeline
        );
    };
    let pool = jetflow_operator::controller::nats::NatsPool::new(url.clone());
    let js = pool
        .jetstream(client, ns, Some(&conn))
        .await
        .with_context(|| format!("connecting to NATS at {url}"))?;
    Ok((p, js))
}

/// The dead letters of the pipeline that pass the filter, and the stream holding them.
async fn read(
    p: &Pipeline,
    js: &async_nats::jetstream::Context,
    f: &Filter,
) -> Result<(async_nats::jetstream::stream::Stream, Vec<DeadLetter>)> {
    let subject = p.dead_letter_subject();
    let source_stream = p.spec.source.jetstream.as_ref().map(|s| s.stream.as_str());
    // Names contain neither `/` nor `:`: the prefix names one pipeline.
    let id_prefix = format!(
        "{}/{}:",
        p.namespace().unwrap_or_else(|| "default".to_owned()),
        p.name_any()
    );
    let stream_name = js.stream_by_subject(subject.clone()).await.map_err(|e| {
        anyhow::anyhow!(
            "no JetStream stream captures the dead-letter subject {subject} of Pipeline {} ({e}): its dead letters were published to NATS Core and not kept; a Stream whose subjects capture {subject} keeps them",
            p.name_any()
        )
    })?;
    let stream = js.get_stream(&stream_name).await?;
    let deliver_policy = match f.since {
        Some(t) => DeliverPolicy::ByStartTime {
            start_time: async_nats::datetime::parse_rfc3339(&t.to_string())
                .map_err(|e| anyhow::anyhow!("--since {t}: {e}"))?,
        },
        None => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: subject.clone(),
            deliver_policy,
            ack_policy: AckPolicy::None,
            inactive_threshold: std::time::Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .with_context(|| format!("reading stream {stream_name}"))?;
    let pending = consumer.cached_info().num_pending;
    let mut letters = Vec::new();
    if pending > 0 {
        let mut messages = consumer.messages().await?.take(pending as usize);
        while let Some(m) = messages.next().await {
            let m = m.map_err(|e| anyhow::anyhow!("reading stream {stream_name}: {e}"))?;
            let info = m
                .info()
                .map_err(|e| anyhow::anyhow!("reading stream {stream_name}: {e}"))?;
            let time = jiff::Timestamp::from_nanosecond(info.published.unix_timestamp_nanos())
                .unwrap_or_default();
            let letter = DeadLetter {
                sequence: info.stream_sequence,
                time,
                headers: m.headers.clone().unwrap_or_default(),
                payload: m.payload.clone(),
            };
            // A dead-letter subject may be shared by pipelines of other sources, and of the
            // same source: only this pipeline's are listed and replayed (a letter naming no
            // valid source is listed, and skipped by a replay).
            let ours = letter.source().is_none_or(|s| s.stream == source_stream)
                && !from_other_pipeline(&letter, &id_prefix);
            if ours
                && f.step
                    .as_deref()
                    .is_none_or(|s| letter.header("Jetflow-Error-Step") == s)
            {
                letters.push(letter);
            }
        }
    }
    let _ = stream.delete_consumer(&consumer.cached_info().name).await;
    Ok((stream, letters))
}

/// Whether a worker of another pipeline than the one whose message ids begin with `id_prefix`
/// sent the dead letter (its message id `<namespace>/<pipeline>:…:dlq`); a letter without such
/// an id (published by hand) is nobody else's.
fn from_other_pipeline(letter: &DeadLetter, id_prefix: &str) -> bool {
    letter
        .headers
        .get("Nats-Msg-Id")
        .map(|id| id.as_str())
        .is_some_and(|id| id.ends_with(":dlq") && !id.starts_with(id_prefix))
}

/// `dlq list`.
pub async fn list(client: &kube::Client, ns: &str, f: &Filter) -> Result<()> {
    let (p, js) = connect(client, ns, f).await?;
    let (stream, letters) = read(&p, &js, f).await?;
    let stream = &stream.cached_info().config.name;
    println!(
        "{} dead letters of Pipeline {ns}/{} in stream {stream}",
        letters.len(),
        f.pipeline
    );
    if letters.is_empty() {
        return Ok(());
    }
    println!("SEQ\tTIME\tSTEP\tKIND\tSOURCE SUBJECT\tSOURCE SEQ\tERROR");
    for l in &letters {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            l.sequence,
            l.time.round(jiff::Unit::Second).unwrap_or(l.time),
            l.header("Jetflow-Error-Step"),
            l.header("Jetflow-Error-Kind"),
            l.source().map_or("", |s| s.subject),
            l.source()
                .map(|s| s.sequence.to_string())
                .unwrap_or_default(),
            l.header("Jetflow-Error"),
        );
    }
    Ok(())
}

/// The message id of a replayed dead letter: the same for every replay of it.
pub fn replay_id(stream: &str, sequence: u64) -> String {
    format!("jetflow-replay-{stream}-{sequence}")
}

/// `dlq replay`.
pub async fn replay(client: &kube::Client, ns: &str, f: &Filter) -> Result<()> {
    let (p, js) = connect(client, ns, f).await?;
    if p.spec.source.jetstream.is_none() {
        bail!(
            "Pipeline {} reads NATS Core (spec.source.core): a replayed message could not be confirmed or deduplicated; republish from `dlq list` by hand if it is wanted",
            f.pipeline
        );
    }
    let (dlq, letters) = read(&p, &js, f).await?;
    let stream = dlq.cached_info().config.name.clone();
    let target = jetflow_nats::replay::target(ns, &f.pipeline);
    let (mut replayed, mut duplicates, mut skipped) = (0u64, 0u64, 0u64);
    for l in &letters {
        let Some(subject) = l.source().map(|s| s.subject.to_owned()) else {
            eprintln!(
                "dead letter {} in {stream} has no valid Jetflow-Source header (<stream>/<sequence>/<subject>): not replayed",
                l.sequence
            );
            skipped += 1;
            continue;
        };
        let mut headers = HeaderMap::new();
        for (name, values) in l.headers.iter() {
            let n = name.to_string();
            if n.starts_with("Jetflow-") || n.starts_with("Nats-") {
                continue;
            }
            for v in values {
                headers.append(name.clone(), v.clone());
            }
        }
        headers.insert("Nats-Msg-Id", replay_id(&stream, l.sequence).as_str());
        headers.insert(jetflow_nats::replay::REPLAY_FOR, target.as_str());
        let ack = js
            .publish_with_headers(subject.clone(), headers, l.payload.clone())
            .await
            .with_context(|| format!("publishing dead letter {} to {subject}", l.sequence))?
            .await
            .with_context(|| {
                format!(
                    "publishing dead letter {} to {subject}: no stream stored it",
                    l.sequence
                )
            })?;
        if ack.duplicate {
            duplicates += 1;
        } else {
            replayed += 1;
        }
        // Stored in the source stream: the dead letter has been replayed, and goes.
        dlq.delete_message(l.sequence).await.with_context(|| {
            format!(
                "dead letter {} replayed to {subject}, but deleting it from stream {stream} failed: it is still listed; a replay within the source stream's duplicate window does not store it twice",
                l.sequence
            )
        })?;
    }
    println!(
        "replayed {replayed} dead letters of Pipeline {ns}/{} to their source subjects, for this pipeline only, and deleted them from {stream} ({duplicates} already replayed within the source stream's duplicate window and deleted now, {skipped} without a source subject kept)",
        f.pipeline
    );
    Ok(())
}
