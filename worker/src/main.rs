//! `jetflow-worker`: runs a pipeline's split readers, steps, sink and checkpoints.
//!
//! This file only parses flags and wires the parts together: the manifest is loaded and
//! validated (exit code 2 when invalid: a wrong or unknown field, or outputs routed back to the
//! source), the NATS connection opened, the routing checked against the source and sink
//! streams as NATS has them (exit code 2), the HTTP endpoints served,
//! SIGTERM and SIGINT turned into a cancellation, and the runner's outcome into an exit code:
//! 0 after a clean stop (or a bounded run whose splits all finished, after a summary on
//! stdout; in a pod, `--assignment-store configmap`, a bounded run stays up until SIGTERM), 1 on a failure, 2 for an invalid or unsupported pipeline, 3 when splits stopped on
//! failed messages (error policy `Stop`), 4 when NATS refused the connection's credentials or
//! they could not be read (the message names the `connection` field to check).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use jetflow_crds::Pipeline;
use jetflow_crds::routing::{StreamSubjects, Streams};
use jetflow_nats::ConnectError;
use jetflow_worker::assignment;
use jetflow_worker::cluster::{StoreKind, Stores};
use jetflow_worker::http::Health;
use jetflow_worker::logs::LogFormat;
use jetflow_worker::pipeline::Membership;
use jetflow_worker::{Metrics, RunError, RunOutcome, Runner, RunnerConfig};
use tokio_util::sync::CancellationToken;

/// mimalloc rather than the system allocator: steps and headers allocate per message, and it
/// takes about 15% off a jq step (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jetflow's data plane: runs one Pipeline's splits.
#[derive(Parser, Debug)]
#[command(name = "jetflow-worker", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Log format: text for a terminal (coloured only there), json for pods (one flat object
    /// per line carrying the `pipeline`, `worker` and `split` fields).
    #[arg(
        long,
        global = true,
        env = "JETFLOW_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a pipeline until SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Validates a pipeline manifest (the checks `run` does before any message moves).
    Check(ManifestArgs),
}

#[derive(clap::Args, Debug)]
struct ManifestArgs {
    /// The manifest holding the Pipeline (other documents are ignored).
    #[arg(short = 'f', long = "file", env = "JETFLOW_PIPELINE_FILE")]
    file: PathBuf,
    /// The Pipeline to run when the manifest holds several.
    #[arg(long, env = "JETFLOW_PIPELINE")]
    pipeline: Option<String>,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// NATS URL for a pipeline whose connection names none, or several separated by commas
    /// (`nats://a:4222,nats://b:4222`), tried in turn.
    #[arg(
        long,
        env = "JETFLOW_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
    /// Folder of the file checkpoint store.
    #[arg(
        long,
        env = "JETFLOW_CHECKPOINT_DIR",
        default_value = ".jetflow/checkpoints"
    )]
    checkpoint_dir: PathBuf,
    /// Where checkpoints are kept: `file` (under --checkpoint-dir) or `configmap` (the
    /// pipeline's checkpoint ConfigMap in $POD_NAMESPACE, which the operator creates).
    #[arg(
        long,
        env = "JETFLOW_CHECKPOINT_STORE",
        value_enum,
        default_value = "file"
    )]
    checkpoint_store: StoreKind,
    /// This worker's id, written as the owner into checkpoints (default: the host name).
    #[arg(long, env = "JETFLOW_WORKER_ID")]
    worker_id: Option<String>,
    /// Folder of the Secrets a connection refers to, as `<dir>/<secret>/<key>`.
    #[arg(
        long,
        env = "JETFLOW_SECRETS_DIR",
        default_value = "/var/run/secrets/jetflow"
    )]
    secrets_dir: PathBuf,
    /// Address of /metrics, /healthz and /readyz; `0` picks a free loopback port.
    #[arg(long, env = "JETFLOW_METRICS_ADDR", default_value = "127.0.0.1:9090")]
    metrics_addr: String,
    /// How long a shutdown may take to drain, checkpoint and acknowledge.
    #[arg(long, env = "JETFLOW_SHUTDOWN_TIMEOUT", default_value = "25s")]
    shutdown_timeout: jetflow_crds::Duration,
    /// A JSON file `{"generation": N, "owners": {"<split>": "<worker id>"}}` saying which
    /// worker owns each split, read again every 500 ms; the worker runs only its own splits.
    /// Without it the worker owns every split.
    #[arg(long, env = "JETFLOW_ASSIGNMENT_FILE")]
    assignment_file: Option<PathBuf>,
    /// Where the split assignment comes from: `file` (--assignment-file) or `configmap` (the
    /// assignment ConfigMap the operator publishes in $POD_NAMESPACE, watched). With
    /// `configmap` a bounded run does not exit when its splits finished: it stays up, idle,
    /// until SIGTERM (the operator scales the workers to 0).
    #[arg(
        long,
        env = "JETFLOW_ASSIGNMENT_STORE",
        value_enum,
        default_value = "file"
    )]
    assignment_store: StoreKind,
    /// How long a split this worker gains waits for its previous owner to release it.
    #[arg(long, env = "JETFLOW_HANDOVER_TIMEOUT", default_value = "15s")]
    handover_timeout: jetflow_crds::Duration,
    /// How long the steps may run on one message; a message that takes longer fails with
    /// kind `timeout` and goes to the pipeline's error policy.
    #[arg(long, env = "JETFLOW_STEP_TIMEOUT", default_value = "1s")]
    step_timeout: jetflow_crds::Duration,
    /// Threads of the async runtime that moves messages (the NATS connection, the split
    /// readers, the split tasks, the checkpoints); default: one per core. The steps run on
    /// threads of their own, one per split, and the file store writes on a blocking thread,
    /// whatever this says. One thread hands each message from task to task without waking
    /// another, about a fifth less worker CPU per message at moderate rates; but it caps the
    /// worker at one core, and on a node whose cores are contended a process with fewer
    /// threads gets a smaller share of them (see docs/benchmarks.md).
    #[arg(long, env = "JETFLOW_RUNTIME_THREADS",
        value_parser = clap::value_parser!(u16).range(1..=1024))]
    runtime_threads: Option<u16>,
}

/// A pipeline that cannot run: exit code 2.
#[derive(Debug, thiserror::Error)]
enum Invalid {
    /// The manifest could not be read or holds no such pipeline.
    #[error(transparent)]
    Manifest(#[from] jetflow_crds::manifest::ManifestError),
    /// A field of the spec is wrong.
    #[error("pipeline {name} is invalid: {source}")]
    Spec {
        /// The pipeline.
        name: String,
        /// What is wrong.
        source: jetflow_crds::validate::Invalid,
    },
    /// A step does not compile.
    #[error("pipeline {name} is invalid: {source}")]
    Steps {
        /// The pipeline.
        name: String,
        /// The first step that does not compile.
        source: Box<jetflow_steps::CompileError>,
    },
}

/// `check`: the manifest's Pipeline validated as `run` validates it before connecting, and its
/// routing against the subjects of the manifest's `Stream` documents for its source and sink
/// streams (no connection is made: `run` checks the routing again against the streams as NATS
/// has them). Returns what to print.
fn check(args: &ManifestArgs) -> Result<String, Invalid> {
    let pipeline = load(args)?;
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let streams: Vec<StreamSubjects> = jetflow_crds::manifest::load_streams(&args.file)?
        .iter()
        .filter_map(StreamSubjects::of_stream)
        .collect();
    let find =
        |stream: Option<&String>| stream.and_then(|name| streams.iter().find(|s| &s.name == name));
    let known = Streams {
        source: find(pipeline.spec.source.jetstream.as_ref().map(|s| &s.stream)),
        sink: find(pipeline.spec.sink.jetstream.as_ref().map(|s| &s.stream)),
    };
    let errors = jetflow_crds::routing::check_streams(&pipeline, known);
    if !errors.is_empty() {
        return Err(Invalid::Spec {
            name,
            source: jetflow_crds::validate::Invalid(errors),
        });
    }
    let checked: Vec<&str> = [known.source, known.sink]
        .into_iter()
        .flatten()
        .map(|s| s.name.as_str())
        .collect();
    let mut text = format!("pipeline {name} is valid");
    if !checked.is_empty() {
        text.push_str(&format!(
            "\nits outputs were checked against the subjects of the manifest's Stream {}",
            checked.join(" and ")
        ));
    }
    Ok(text)
}

fn load(args: &ManifestArgs) -> Result<Pipeline, Invalid> {
    let pipeline = jetflow_crds::manifest::load_pipeline(&args.file, args.pipeline.as_deref())?;
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    jetflow_crds::validate::pipeline(&pipeline).map_err(|source| Invalid::Spec {
        name: name.clone(),
        source,
    })?;
    jetflow_steps::check(&pipeline.spec.steps).map_err(|source| Invalid::Steps {
        name,
        source: Box::new(source),
    })?;
    Ok(pipeline)
}

/// Turns transparent huge pages off for the process. mimalloc's arena is one large aligned
/// mapping: where huge pages apply to it (a node whose THP setting is `always`; mimalloc itself
/// is built with `no_thp`, so it never asks for them), every 2 MiB range it touches stays
/// resident as a whole, about 10 MiB at rest and tens of MiB more under load, for no gain in
/// throughput. Returns the error to log once logging is set up.
fn without_huge_pages() -> Option<String> {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        return Some(e.to_string());
    }
    None
}

fn main() -> ExitCode {
    let huge_pages = without_huge_pages();
    jetflow_nats::install_crypto_provider();
    let args = Args::parse();
    jetflow_worker::logs::init(args.log_format, jetflow_worker::logs::Output::Stderr);
    if let Some(error) = huge_pages {
        tracing::debug!(%error, "cannot turn transparent huge pages off");
    }
    match args.command {
        Command::Check(manifest) => match check(&manifest) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Command::Run(run_args) => {
            let pipeline = match load(&run_args.manifest) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            };
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(threads) = run_args.runtime_threads {
                builder.worker_threads(usize::from(threads));
            }
            let runtime = match builder.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the async runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(*run_args, pipeline)) {
                Ok(code) => code,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn metrics_addr(text: &str) -> anyhow::Result<SocketAddr> {
    if text == "0" {
        return Ok(SocketAddr::from(([127, 0, 0, 1], 0)));
    }
    text.parse()
        .with_context(|| format!("--metrics-addr {text:?} is not an address like 127.0.0.1:9090"))
}

async fn run(args: RunArgs, pipeline: Pipeline) -> anyhow::Result<ExitCode> {
    let name = pipeline.metadata.name.clone().unwrap_or_default();
    let namespace = pipeline
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let worker_id = args
        .worker_id
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    jetflow_worker::logs::set_process_fields(&namespace, &name, &worker_id);
    let cancel = CancellationToken::new();
    // Before anything slow (connecting, opening stores): a SIGTERM during start-up must be a
    // clean shutdown too, not the default action of the signal.
    cancel_on_signal(cancel.clone());
    let metrics = Metrics::new();
    let health = Arc::new(Health::default());
    let (bound, http) = jetflow_worker::http::serve(
        metrics_addr(&args.metrics_addr)?,
        metrics.clone(),
        health.clone(),
        cancel.child_token(),
    )
    .await
    .with_context(|| format!("cannot listen on {}", args.metrics_addr))?;
    tracing::info!(pipeline = %name, worker = %worker_id, metrics = %bound, "jetflow-worker starting");

    let secrets = jetflow_nats::Secrets::new(&args.secrets_dir);
    let client_name = format!("jetflow-worker {namespace}/{name} {worker_id}");
    // A NATS Core split that does not keep up loses messages in the client, which reports
    // each one only as an event: counted, so that no drop goes unnoticed.
    let dropped = metrics.dropped_slow_consumer.clone();
    let hook: jetflow_nats::EventHook = Arc::new(move |event| {
        if let async_nats::Event::SlowConsumer(_) = event {
            dropped.inc();
        }
    });
    let connect = jetflow_nats::connect_observed(
        pipeline.spec.connection.as_ref(),
        &args.nats,
        &secrets,
        &client_name,
        Some(hook),
    );
    let connected = tokio::select! {
        connected = connect => connected,
        () = cancel.cancelled() => {
            // Nothing was read yet, so there is nothing to checkpoint.
            tracing::info!("stopped while connecting to NATS");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let client = match connected {
        Ok(client) => client,
        Err(e) if e.is_secret() || matches!(e, ConnectError::Authentication { .. }) => {
            tracing::error!("{e}");
            return Ok(ExitCode::from(4));
        }
        Err(e @ ConnectError::InvalidUrl { .. }) => {
            tracing::error!("{e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };
    // Where the outputs go, against the streams as they are, before anything is read.
    let js = async_nats::jetstream::new(client.clone());
    let routing = jetflow_nats::routing::check(&js, &pipeline).await;
    if !routing.is_empty() {
        tracing::error!(
            "{}",
            Invalid::Spec {
                name,
                source: jetflow_crds::validate::Invalid(routing),
            }
        );
        return Ok(ExitCode::from(2));
    }
    let stores = Stores::connect(args.checkpoint_store, args.assignment_store).await?;
    let epoch = pipeline
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(jetflow_crds::names::RESET_APPLIED_ANNOTATION))
        .cloned();
    let store = stores.checkpoint(
        args.checkpoint_store,
        &args.checkpoint_dir,
        &namespace,
        &name,
        epoch.as_deref(),
    )?;
    tracing::info!(checkpoint = %store.location(), "checkpoint store");
    let membership = membership(&args, &stores, &pipeline, &client, &worker_id, &cancel).await?;
    let config = RunnerConfig {
        pipeline,
        worker_id,
        generation: 0,
        shutdown_timeout: args.shutdown_timeout.get(),
    };
    if args.step_timeout.get().is_zero() {
        tracing::error!("--step-timeout: must be longer than 0");
        return Ok(ExitCode::from(2));
    }
    let mut runner = match Runner::new(config, client.clone(), store, metrics, health).await {
        Ok(r) => r,
        Err(
            e @ (RunError::Unsupported(_)
            | RunError::Steps(_)
            | RunError::Template(_)
            | RunError::Bound(_)
            | RunError::Retention(_)),
        ) => {
            tracing::error!("{e}");
            return Ok(ExitCode::from(2));
        }
        Err(e) => return Err(e.into()),
    };

    runner.set_step_timeout(args.step_timeout.get());
    let outcome = runner.run_with(membership, cancel.clone()).await;
    cancel.cancel();
    let _ = client.flush().await;
    let _ = http.await;
    match outcome {
        Ok(RunOutcome::Completed) => {
            tracing::info!("stopped cleanly");
            Ok(ExitCode::SUCCESS)
        }
        Ok(RunOutcome::Finished(summary)) => {
            let total: u64 = summary.iter().map(|s| s.messages).sum();
            for s in &summary {
                println!(
                    "split {}: {} messages, final position {}{}",
                    s.split,
                    s.messages,
                    s.position,
                    if s.finished { "" } else { " (not finished)" }
                );
            }
            println!(
                "bounded run finished: {} splits, {total} messages",
                summary.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok(RunOutcome::Stopped(reasons)) => {
            for (split, reason) in reasons {
                tracing::error!(split, reason, "split stopped on a failed message");
            }
            Ok(ExitCode::from(3))
        }
        Err(e) => Err(e.into()),
    }
}

/// The splits this worker starts with and where their changes come from: the subjects in the
/// stream for `splitBy: Subject` (looked up again every discovery interval), and the
/// assignment file when there is one.
async fn membership(
    args: &RunArgs,
    stores: &Stores,
    pipeline: &Pipeline,
    client: &async_nats::Client,
    worker_id: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<Membership> {
    let spec = &pipeline.spec;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut watching = false;
    let splits = match &spec.source.jetstream {
        Some(source) if jetflow_crds::split::is_dynamic(spec) => {
            let js = async_nats::jetstream::new(client.clone());
            let splits =
                jetflow_worker::discovery::subjects(&js, &source.stream, &source.filter_subjects)
                    .await?;
            tracing::info!(splits = splits.len(), interval = %source.discovery_interval, "splits follow the subjects in the stream");
            jetflow_worker::discovery::watch(
                js,
                source.stream.clone(),
                source.filter_subjects.clone(),
                splits.clone(),
                source.discovery_interval.get(),
                tx.clone(),
                cancel.child_token(),
            );
            watching = true;
            splits
        }
        _ => jetflow_crds::split::static_splits(spec),
    };
    let name = pipeline.metadata.name.as_deref().unwrap_or_default();
    let source = stores.assignment(args.assignment_store, args.assignment_file.as_deref(), name)?;
    let mut stay_up = false;
    let assignment = match source {
        Some(feed) => {
            let initial = assignment::initial(feed.source.as_ref()).await?;
            tracing::info!(assignment = %feed.source.location(), generation = initial.generation, owned = initial.splits_of(worker_id).count(), "following the assignment");
            feed.follow(initial.clone(), tx.clone(), cancel.child_token());
            watching = true;
            // A pod: its splits come from the operator, which scales the workers to 0 once a
            // bounded run finished; it must not exit before (it would be started again).
            stay_up = feed.is_config_map();
            Some(initial)
        }
        None => None,
    };
    let membership = Membership::new(
        splits,
        assignment,
        watching.then_some(rx),
        args.handover_timeout.get(),
    );
    Ok(if stay_up {
        membership.stay_up()
    } else {
        membership
    })
}

/// Installs the SIGTERM and SIGINT handlers now (the handlers exist from this call on, not from
/// when the task first runs) and cancels `cancel` when either signal arrives.
fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let interrupt = signal(SignalKind::interrupt());
    tokio::spawn(async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the worker");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        tracing::info!("shutting down: draining splits for a final checkpoint");
        cancel.cancel();
    });
}
