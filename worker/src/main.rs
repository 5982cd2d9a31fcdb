//! `jetflow-worker`: runs a pipeline's split readers, steps, sink and checkpoints.

use clap::Parser;

/// jetflow's data plane: runs one Pipeline's splits.
#[derive(Parser, Debug)]
#[command(name = "jetflow-worker", version, about)]
struct Args {
    /// NATS URL for a pipeline whose connection names none.
    #[arg(
        long,
        env = "JETFLOW_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    nats: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt().init();
    tracing::info!(nats = %args.nats, "jetflow-worker starting");
    Ok(())
}
