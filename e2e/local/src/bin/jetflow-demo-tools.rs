//! `jetflow-demo-tools`: the small NATS chores of the local demo (`scripts/demo.sh`): create an
//! example's streams from its `Stream` manifests, publish sample messages, wait for a stream to
//! fill, print a stream's messages and a checkpoint file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_e2e::{output, streams};
use jetflow_nats::Secrets;

/// The local demo's helpers.
#[derive(Parser, Debug)]
#[command(name = "jetflow-demo-tools", version, about)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create or update the JetStream streams that the Stream documents of a manifest declare.
    Streams {
        /// The manifest (a Stream and Pipeline example).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// NATS URL for Streams whose connection names none.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Folder of Secrets, laid out as <dir>/<secret name>/<key>.
        #[arg(long, default_value = ".jetflow/secrets")]
        secrets_dir: PathBuf,
    },
    /// Publish numbered messages, round-robin over the subjects.
    Publish {
        /// NATS URL.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// Subjects, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        subjects: Vec<String>,
        /// How many messages in all.
        #[arg(long, default_value_t = 10)]
        count: u64,
        /// Payload template: `{n}` is the message number (1-based), `{subject}` its subject.
        #[arg(long, default_value = r#"{"n": {n}}"#)]
        body: String,
    },
    /// Wait until a stream holds at least COUNT messages.
    Wait {
        /// NATS URL.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// The stream.
        #[arg(long)]
        stream: String,
        /// Messages expected.
        #[arg(long)]
        count: u64,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Print a stream's messages: sequence, subject, the headers jetflow sets, payload.
    Show {
        /// NATS URL.
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats: String,
        /// The stream.
        #[arg(long)]
        stream: String,
        /// Print at most this many (the first ones).
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Print a checkpoint file written by `jetflow-worker run`.
    Checkpoint {
        /// The file (`<checkpoint dir>/<namespace>/<pipeline>.json`).
        file: PathBuf,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Cmd::Streams {
            file,
            nats,
            secrets_dir,
        } => {
            let names = streams::apply_manifest(&file, &nats, &Secrets::new(secrets_dir)).await?;
            for name in names {
                println!("stream {name} ready");
            }
        }
        Cmd::Publish {
            nats,
            subjects,
            count,
            body,
        } => {
            let client = async_nats::connect(&nats)
                .await
                .with_context(|| format!("connecting to {nats}"))?;
            for n in 1..=count {
                let subject = &subjects[usize::try_from(n - 1)? % subjects.len()];
                let payload = body
                    .replace("{n}", &n.to_string())
                    .replace("{subject}", subject);
                output::publish(&client, subject, payload.into()).await?;
            }
            client.flush().await.context("flushing the publishes")?;
            println!("published {count} messages to {}", subjects.join(", "));
        }
        Cmd::Wait {
            nats,
            stream,
            count,
            timeout,
        } => {
            let js = async_nats::jetstream::new(
                async_nats::connect(&nats)
                    .await
                    .with_context(|| format!("connecting to {nats}"))?,
            );
            let n =
                output::wait_for_count(&js, &stream, count, Duration::from_secs(timeout)).await?;
            println!("stream {stream} holds {n} messages");
        }
        Cmd::Show {
            nats,
            stream,
            limit,
        } => {
            let js = async_nats::jetstream::new(
                async_nats::connect(&nats)
                    .await
                    .with_context(|| format!("connecting to {nats}"))?,
            );
            let messages = output::messages(&js, &stream).await?;
            println!("stream {stream}: {} messages", messages.len());
            for m in messages.iter().take(limit) {
                let mut headers: Vec<String> = m
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        let values: Vec<&str> = v.iter().map(|x| x.as_str()).collect();
                        format!("{k}={}", values.join(","))
                    })
                    .collect();
                headers.sort();
                println!("  #{} {}  {}", m.sequence, m.subject, m.text());
                if !headers.is_empty() {
                    println!("      {}", headers.join("  "));
                }
            }
            if messages.len() > limit {
                println!("  … and {} more", messages.len() - limit);
            }
        }
        Cmd::Checkpoint { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let checkpoint: Checkpoint = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a jetflow checkpoint", file.display()))?;
            let time = checkpoint
                .time
                .map(|t| t.to_string())
                .unwrap_or_else(|| "-".into());
            println!(
                "checkpoint {} at {time} ({})",
                checkpoint.id,
                file.display()
            );
            for (split, p) in &checkpoint.splits {
                let finished = if p.finished { "  finished" } else { "" };
                println!("  split {split}: position {}{finished}", p.position);
            }
        }
    }
    Ok(())
}
