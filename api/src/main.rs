//! `voxanne`: serve calls, migrate the database, simulate a caller, or load-test a server.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use api::config::Config;

#[derive(Parser)]
#[command(
    name = "voxanne",
    version,
    about = "Voxanne: a real-time voice agent media server for Twilio"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Twilio's webhooks and media streams (configured by environment, see README).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Place a simulated call to a running server and save what the caller heard.
    Simulate {
        /// The server to call (default: http://VOXANNE_ADDR).
        #[arg(long)]
        server: Option<String>,
        /// WAV files the caller says, in order (default: a built-in synthetic caller).
        #[arg(long = "wav")]
        wavs: Vec<PathBuf>,
        /// Lines after the first interrupt the agent this many ms into its speech.
        #[arg(long)]
        interrupt_ms: Option<u64>,
        /// Where to save what the caller heard.
        #[arg(long, default_value = "simulated-call.wav")]
        out: PathBuf,
    },
    /// Run many simulated callers against a running server and report latency and CPU.
    Load {
        #[arg(long)]
        server: Option<String>,
        /// Concurrent calls.
        #[arg(long, default_value_t = 10)]
        calls: usize,
        /// Seconds each call lasts.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// Milliseconds between call starts.
        #[arg(long, default_value_t = 50)]
        ramp_ms: u64,
        /// The server's process id, to measure its CPU.
        #[arg(long)]
        server_pid: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = Config::from_env()?;
    let server_url = |s: Option<String>| s.unwrap_or_else(|| format!("http://{}", config.addr));
    match cli.command {
        Command::Serve => {
            let engines = api::engines::build(&config)?;
            tracing::warn!(
                engines = ?config.engines,
                "engines in use: {} / {} / {}",
                engines.stt.name(),
                engines.brain.name(),
                engines.tts.name()
            );
            let server = api::start(config, engines).await?;
            shutdown_signal().await;
            tracing::info!("shutting down: letting calls in progress finish (up to 30 s)");
            server.shutdown(Duration::from_secs(30)).await;
        }
        Command::Migrate => {
            std::fs::create_dir_all(&config.data_dir)?;
            let store = storage::Store::open(config.database_url.as_deref(), &config.data_dir)
                .await
                .context("cannot open the database")?;
            store.migrate().await?;
            println!("migrations applied ({})", store.backend());
        }
        Command::Simulate {
            server,
            wavs,
            interrupt_ms,
            out,
        } => {
            let server = server_url(server);
            let public_url = public_url_for(&config, &server);
            api::simulate::run(api::simulate::SimulateOptions {
                server,
                public_url,
                auth_token: config.auth_token.clone(),
                wavs,
                interrupt_after: interrupt_ms.map(Duration::from_millis),
                out,
                database_url: config.database_url.clone(),
                data_dir: config.data_dir.clone(),
            })
            .await?;
        }
        Command::Load {
            server,
            calls,
            seconds,
            ramp_ms,
            server_pid,
        } => {
            let server = server_url(server);
            let public_url = public_url_for(&config, &server);
            api::load::run(api::load::LoadOptions {
                server,
                public_url,
                auth_token: config.auth_token.clone(),
                calls,
                duration: Duration::from_secs(seconds),
                ramp: Duration::from_millis(ramp_ms),
                server_pid,
            })
            .await?;
        }
    }
    Ok(())
}

/// The URL the server believes Twilio reaches it at (what webhooks are signed over): the
/// configured public URL, or, when none was configured, the address we call it on.
fn public_url_for(config: &Config, server: &str) -> String {
    if config.public_url == format!("http://{}", config.addr) {
        server.to_string()
    } else {
        config.public_url.clone()
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
