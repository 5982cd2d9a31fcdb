//! `kubectl jetflow`: a kubectl plugin for jetflow Pipelines. kubectl runs `kubectl-jetflow`
//! from the PATH for `kubectl jetflow …`; it speaks to the cluster with the user's kubeconfig
//! (`--kubeconfig`, `--context`, `-n`, as kubectl) and to NATS through the Pipeline's own
//! connection (its URL and the Secrets it names, read through the API; `--nats` overrides the
//! URL, for a port-forward).
//!
//! - `status PIPELINE`: each split's owner, position, lag and stopped record, and the age of the
//!   last checkpoint;
//! - `rewind PIPELINE --to-sequence N | --to-time T | --to-start`: sets the `jetflow.io/rewind`
//!   annotation the operator acts on, and waits until it did;
//! - `dlq list PIPELINE` and `dlq replay PIPELINE [--since T] [--step NAME]`: the dead letters
//!   of the pipeline, and republishing them to their source subjects (for that pipeline only;
//!   each replayed dead letter is deleted).
//!
//! Errors are printed on stderr with what failed; the exit code is 1.

mod dlq;

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use jetflow_crds::assignment::Assignment;
use jetflow_crds::checkpoint::Checkpoint;
use jetflow_crds::rewind::{self, Target};
use jetflow_crds::{Pipeline, names};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// kubectl jetflow: status, rewind and dead letters of jetflow Pipelines.
#[derive(Parser, Debug)]
#[command(name = "kubectl-jetflow", bin_name = "kubectl jetflow", version)]
struct Cli {
    /// The kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context (default: the current context).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Each split's owner, position, lag and stopped record, and the last checkpoint's age.
    Status {
        /// The Pipeline.
        pipeline: String,
    },
    /// Moves every split of a running pipeline to a position (the `jetflow.io/rewind`
    /// annotation) and waits until the operator applied it.
    Rewind(RewindArgs),
    /// The pipeline's dead letters.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
}

#[derive(Args, Debug)]
#[group(required = true, multiple = false, id = "target")]
struct Targets {
    /// Read every split from this stream sequence on.
    #[arg(long, group = "target")]
    to_sequence: Option<u64>,
    /// Read every split from the first message stored at or after this time (RFC 3339).
    #[arg(long, group = "target")]
    to_time: Option<jiff::Timestamp>,
    /// Read every split from `spec.source.jetstream.start`.
    #[arg(long, group = "target")]
    to_start: bool,
}

#[derive(Args, Debug)]
struct RewindArgs {
    /// The Pipeline.
    pipeline: String,
    #[command(flatten)]
    target: Targets,
    /// How long to wait for the operator to apply the rewind (0: do not wait).
    #[arg(long, default_value = "60")]
    timeout_seconds: u64,
}

#[derive(Subcommand, Debug)]
enum DlqCommand {
    /// Lists the dead letters: step, error kind and text, source subject and sequence.
    List(dlq::Filter),
    /// Republishes the original messages to their source subjects for this pipeline only, and
    /// deletes each dead letter once the source stream stored it.
    Replay(dlq::Filter),
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    jetflow_nats::install_crypto_provider();
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The Kubernetes client of the user's kubeconfig, and the namespace to use.
async fn client(cli: &Cli) -> Result<(kube::Client, String)> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..Default::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => kube::Config::from_kubeconfig(&options)
            .await
            .context("loading the kubeconfig")?,
    };
    let namespace = cli
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    Ok((kube::Client::try_from(config)?, namespace))
}

async fn run(cli: Cli) -> Result<()> {
    let (client, ns) = client(&cli).await?;
    match &cli.command {
        Command::Status { pipeline } => status(&client, &ns, pipeline).await,
        Command::Rewind(args) => rewind(&client, &ns, args).await,
        Command::Dlq { command } => match command {
            DlqCommand::List(f) => dlq::list(&client, &ns, f).await,
            DlqCommand::Replay(f) => dlq::replay(&client, &ns, f).await,
        },
    }
}

/// The Pipeline `name`, or an error that says where it was looked for.
pub(crate) async fn pipeline(client: &kube::Client, ns: &str, name: &str) -> Result<Pipeline> {
    Api::<Pipeline>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading Pipeline {ns}/{name}"))?
        .with_context(|| format!("Pipeline {name} not found in namespace {ns}"))
}

async fn config_map(client: &kube::Client, ns: &str, name: &str) -> Result<Option<ConfigMap>> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .with_context(|| format!("reading ConfigMap {ns}/{name}"))
}

fn decode<T: serde::de::DeserializeOwned + Default>(
    cm: Option<&ConfigMap>,
    key: &str,
) -> Result<T> {
    match cm.and_then(|c| c.data.as_ref()).and_then(|d| d.get(key)) {
        Some(text) => serde_json::from_str(text).with_context(|| format!("decoding {key}")),
        None => Ok(T::default()),
    }
}

fn age(since: jiff::Timestamp) -> String {
    let secs = jiff::Timestamp::now()
        .duration_since(since)
        .as_secs()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

async fn status(client: &kube::Client, ns: &str, name: &str) -> Result<()> {
    let p = pipeline(client, ns, name).await?;
    let cp_cm = config_map(client, ns, &names::checkpoint_config_map(name)).await?;
    let checkpoint: Checkpoint = decode(cp_cm.as_ref(), names::CHECKPOINT_KEY)?;
    let assignment: Assignment = decode(
        config_map(client, ns, &names::assignment_config_map(name))
            .await?
            .as_ref(),
        names::ASSIGNMENT_KEY,
    )?;
    let st = p.status.clone().unwrap_or_default();
    let phase = st
        .phase
        .map(|ph| format!("{ph:?}"))
        .unwrap_or_else(|| "Unknown".into());
    let last = match checkpoint.time.filter(|_| checkpoint.id > 0) {
        Some(t) => format!("checkpoint {} {} ago", checkpoint.id, age(t)),
        None => "no checkpoint yet".into(),
    };
    println!(
        "Pipeline {ns}/{name}: {phase}, {}/{} workers ready, lag {}, {last}",
        st.ready_replicas,
        st.replicas,
        st.lag.map_or("-".into(), |l| l.to_string()),
    );
    if let Some(a) = &st.autoscaling {
        println!(
            "Autoscaling: {} workers asked for ({})",
            a.desired_parallelism, a.reason
        );
    }
    let mut rows = vec![[
        "SPLIT".to_owned(),
        "OWNER".into(),
        "POSITION".into(),
        "LAG".into(),
        "STOPPED".into(),
    ]];
    let mut splits: Vec<String> = st.splits.iter().map(|s| s.name.clone()).collect();
    for s in checkpoint.splits.keys() {
        if !splits.contains(s) {
            splits.push(s.clone());
        }
    }
    for split in &splits {
        let status = st.splits.iter().find(|s| &s.name == split);
        let pos = checkpoint.splits.get(split);
        rows.push([
            split.clone(),
            assignment
                .owners
                .get(split)
                .cloned()
                .or_else(|| status.and_then(|s| s.owner.clone()))
                .unwrap_or_else(|| "-".into()),
            pos.map(|p| p.position)
                .or(status.map(|s| s.position))
                .unwrap_or(0)
                .to_string(),
            status
                .and_then(|s| s.lag)
                .map_or("-".into(), |l| l.to_string()),
            pos.and_then(|p| p.stopped.clone())
                .or_else(|| status.and_then(|s| s.stopped.clone()))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(())
}

async fn rewind(client: &kube::Client, ns: &str, args: &RewindArgs) -> Result<()> {
    let t = &args.target;
    let target = match (t.to_sequence, t.to_time, t.to_start) {
        (Some(0), _, _) => bail!("--to-sequence must be at least 1"),
        (Some(n), _, _) => Target::Sequence(n),
        (_, Some(time), _) => Target::Time(time),
        _ => Target::Start,
    };
    let p = pipeline(client, ns, &args.pipeline).await?;
    if p.spec.source.jetstream.is_none() {
        bail!(
            "Pipeline {} reads NATS Core (spec.source.core): it has no positions to rewind",
            args.pipeline
        );
    }
    // The nonce makes each rewind a new value, so the same target can be asked for again.
    let value = format!("{target};at={}", jiff::Timestamp::now().as_nanosecond());
    let patch = serde_json::json!({"metadata": {"annotations": {names::REWIND_ANNOTATION: value}}});
    Api::<Pipeline>::namespaced(client.clone(), ns)
        .patch(
            &args.pipeline,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("annotating Pipeline {ns}/{}", args.pipeline))?;
    println!(
        "Pipeline {ns}/{}: {}={value}",
        args.pipeline,
        names::REWIND_ANNOTATION
    );
    if args.timeout_seconds == 0 {
        return Ok(());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(args.timeout_seconds);
    let cm_name = names::checkpoint_config_map(&args.pipeline);
    loop {
        let cm = config_map(client, ns, &cm_name).await?;
        let epoch = cm
            .as_ref()
            .and_then(|c| c.metadata.annotations.as_ref())
            .and_then(|a| a.get(names::RESET_APPLIED_ANNOTATION));
        if rewind::split_epoch(epoch.map(String::as_str)).1 == Some(value.as_str()) {
            let checkpoint: Checkpoint = decode(cm.as_ref(), names::CHECKPOINT_KEY)?;
            let positions: Vec<String> = checkpoint
                .splits
                .iter()
                .map(|(s, p)| format!("{s}={}", p.position))
                .collect();
            println!(
                "rewound: positions {}; the workers restart from there",
                positions.join(", ")
            );
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "the operator did not apply the rewind within {}s; see `kubectl describe pipeline {}` (events Rewound or InvalidRewind)",
                args.timeout_seconds,
                args.pipeline
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
