//! `jetflow-operator`: wires the HTTP endpoints, leader election and the controllers together.
//! Everything else lives in the library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use jetflow_operator::controller::{self, Context, NatsPool, Settings};
use jetflow_operator::leader::{self, LeaseLock};
use jetflow_operator::metrics::Metrics;
use tokio::sync::watch;

/// jetflow's Kubernetes operator: reconciles Pipeline and Stream resources into JetStream
/// streams and consumers and worker Deployments.
#[derive(Parser, Debug)]
#[command(name = "jetflow-operator", version, about)]
struct Args {
    /// Default NATS URL for resources whose connection names none.
    #[arg(
        long,
        env = "JETFLOW_NATS_URL",
        default_value = "nats://nats.nats.svc:4222"
    )]
    nats_url: String,

    /// The worker image for Pipelines that name none.
    #[arg(
        long,
        env = "JETFLOW_WORKER_IMAGE",
        default_value = "ghcr.io/jetflow-io/jetflow:latest"
    )]
    worker_image: String,

    /// Watch only this namespace; every namespace when omitted.
    #[arg(long, alias = "watch-namespace", env = "JETFLOW_WATCH_NAMESPACE")]
    namespace: Option<String>,

    /// Address of /metrics and /healthz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,

    /// Port of /metrics and /healthz (overrides the port of --metrics-addr).
    #[arg(long)]
    metrics_port: Option<u16>,

    /// Compete for a Lease before reconciling (needed with more than one replica).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,

    /// Name of the leader election Lease.
    #[arg(long, env = "JETFLOW_LEASE_NAME", default_value = "jetflow-operator")]
    lease_name: String,

    /// Namespace of the Lease: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// This replica's identity in the Lease and in Events.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Seconds between Pipeline resyncs (status refresh, assignment).
    #[arg(long, default_value_t = 15)]
    pipeline_resync_seconds: u64,

    /// Seconds between Stream resyncs (drift repair, and the message and byte counts in status).
    #[arg(long, default_value_t = 15)]
    stream_resync_seconds: u64,
}

/// The log setup shared with the worker: text (coloured only on a terminal) or, with
/// `JETFLOW_LOG_FORMAT=json`, one flat JSON object per line, on standard output.
fn init_logging() {
    let format = match std::env::var("JETFLOW_LOG_FORMAT").as_deref() {
        Ok("json") => jetflow_logs::LogFormat::Json,
        _ => jetflow_logs::LogFormat::Text,
    };
    jetflow_logs::init(format, jetflow_logs::Output::Stdout);
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("install SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    jetflow_nats::install_crypto_provider();
    let args = Args::parse();
    init_logging();
    let mut metrics_addr = args.metrics_addr;
    if let Some(port) = args.metrics_port {
        metrics_addr.set_port(port);
    }
    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("jetflow-operator-{}", std::process::id()));
    tracing::info!(nats_url = %args.nats_url, namespace = ?args.namespace, %identity, "jetflow-operator starting");

    let client = kube::Client::try_default()
        .await
        .context("cannot reach the Kubernetes API")?;
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = watch::channel(false);

    let http = {
        let metrics = metrics.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            jetflow_operator::http::serve(metrics_addr, metrics, async move {
                let _ = stop.changed().await;
            })
            .await
        })
    };

    let (leading_tx, mut leading_rx) = watch::channel(!args.leader_election);
    let election = if args.leader_election {
        let lock = LeaseLock::new(
            kube::Api::namespaced(client.clone(), &args.lease_namespace),
            &args.lease_name,
            &identity,
            Duration::from_secs(15),
        );
        Some(tokio::spawn(leader::run(
            lock,
            Duration::from_secs(4),
            leading_tx,
            stop_rx.clone(),
        )))
    } else {
        None
    };

    let settings = Settings {
        worker_image: args.worker_image.clone(),
        pipeline_resync: Duration::from_secs(args.pipeline_resync_seconds),
        stream_resync: Duration::from_secs(args.stream_resync_seconds),
        ..Settings::default()
    };
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        NatsPool::new(args.nats_url.clone()),
        settings,
        Some(identity),
    ));

    let result = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        lost = async {
            // Wait for leadership, then run the controllers; losing the Lease ends the process.
            while !*leading_rx.borrow_and_update() {
                if leading_rx.changed().await.is_err() {
                    return Err(anyhow::anyhow!("leader election stopped"));
                }
            }
            metrics.leader.set(1);
            tracing::info!("running the controllers");
            let controllers = controller::run(ctx.clone(), args.namespace.clone());
            tokio::pin!(controllers);
            loop {
                tokio::select! {
                    _ = &mut controllers => return Ok(()),
                    changed = leading_rx.changed() => {
                        if changed.is_err() || !*leading_rx.borrow() {
                            return Err(anyhow::anyhow!("lost leadership; exiting so that another replica leads"));
                        }
                    }
                }
            }
        } => lost,
    };
    metrics.leader.set(0);
    let _ = stop_tx.send(true);
    if let Some(election) = election
        && let Ok(Err(lost)) = election.await
    {
        tracing::warn!(%lost, "leader election ended");
    }
    let _ = http.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_flags_parse() {
        let args = Args::try_parse_from([
            "jetflow-operator",
            "--nats-url=nats://nats.nats.svc:4222",
            "--worker-image=ghcr.io/jetflow-io/jetflow:0.1.0",
            "--leader-election=false",
            "--metrics-addr=0.0.0.0:8081",
            "--watch-namespace=shop",
        ])
        .unwrap();
        assert!(!args.leader_election);
        // The chart passes an address (the local kubelet rewrites 0.0.0.0 in args to the pod's
        // own address); --metrics-port=8081 would listen on the same address.
        assert_eq!(args.metrics_addr, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(args.metrics_port, None);
        let by_port = Args::try_parse_from(["jetflow-operator", "--metrics-port=8081"]).unwrap();
        let mut addr = by_port.metrics_addr;
        addr.set_port(by_port.metrics_port.unwrap());
        assert_eq!(addr, args.metrics_addr);
        assert_eq!(args.namespace.as_deref(), Some("shop"));
        assert_eq!(args.worker_image, "ghcr.io/jetflow-io/jetflow:0.1.0");
        let defaults = Args::try_parse_from(["jetflow-operator"]).unwrap();
        assert!(defaults.leader_election);
        assert_eq!(defaults.namespace, None);
    }
}
