//! `jetflow-operator`: the controller that reconciles Pipelines and Streams.

use clap::Parser;

/// jetflow's Kubernetes operator: reconciles Pipeline and Stream resources into JetStream
/// streams and consumers and worker Deployments.
#[derive(Parser, Debug)]
#[command(name = "jetflow-operator", version, about)]
struct Args {
    /// Default NATS URL for resources that name none.
    #[arg(long, env = "JETFLOW_NATS_URL", default_value = "nats://nats:4222")]
    nats_url: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().init();
    tracing::info!(nats_url = %args.nats_url, "jetflow-operator starting");
    Ok(())
}
