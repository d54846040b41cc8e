//! Shared set-up for the end-to-end tests: a real server on a loopback port, with its own data
//! directory and a real database (SQLite, or a database on a throwaway Postgres cluster).

#![allow(dead_code)]

pub mod fake_llm;
pub mod schema;

use std::collections::HashMap;
use std::path::Path;

use api::config::Config;
use api::{Server, caller::CallerConfig};
use media::PHONE_RATE;
use storage::testing::PgCluster;

pub const AUTH_TOKEN: &str = "e2e-auth-token";

/// What the scripted speech-to-text hears, in order, in these tests.
pub const LINES: [&str; 3] = [
    "I would like to book a cleaning.",
    "Tuesday morning please.",
    "That is all, bye.",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub async fn database_url(backend: Backend) -> Option<String> {
    match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(PgCluster::shared().create_database().await),
    }
}

pub fn config(data_dir: &Path, database_url: Option<String>, extra: &[(&str, &str)]) -> Config {
    let mut vars: HashMap<String, String> = HashMap::from([
        ("VOXANNE_ADDR".into(), "127.0.0.1:0".into()),
        ("TWILIO_AUTH_TOKEN".into(), AUTH_TOKEN.into()),
        ("VOXANNE_ENGINES".into(), "test".into()),
        ("VOXANNE_DATA_DIR".into(), data_dir.display().to_string()),
    ]);
    if let Some(url) = database_url {
        vars.insert("DATABASE_URL".into(), url);
    }
    for (k, v) in extra {
        vars.insert(k.to_string(), v.to_string());
    }
    Config::from_lookup(|k| vars.get(k).cloned()).expect("valid test config")
}

pub async fn start(data_dir: &Path, backend: Backend) -> Server {
    let url = database_url(backend).await;
    start_with(config(data_dir, url, &[])).await
}

pub async fn start_with(config: Config) -> Server {
    // Tests build reqwest clients of their own; reqwest needs a TLS provider installed.
    engines::models::install_tls_provider();
    let engines = api::engines::test_engines(&LINES, 2);
    api::start(config, engines).await.expect("server starts")
}

pub fn base_url(server: &Server) -> String {
    format!("http://{}", server.addr)
}

pub fn caller(server: &Server) -> CallerConfig {
    CallerConfig::local(&base_url(server), AUTH_TOKEN)
}

/// Writes `samples` (8 kHz) as a real WAV file and returns its path.
pub fn write_wav(dir: &Path, name: &str, samples: &[i16]) -> std::path::PathBuf {
    let path = dir.join(name);
    api::simulate::write_wav(&path, &[samples]).expect("write wav");
    path
}

/// Energy (mean square) of `samples[from..to]` in 8 kHz sample indexes, clamped to the slice.
pub fn energy(samples: &[i16], from: usize, to: usize) -> f64 {
    let to = to.min(samples.len());
    if from >= to {
        return 0.0;
    }
    samples[from..to]
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / (to - from) as f64
}

/// Number of 20 ms frames that carry sound.
pub fn voiced_frames(samples: &[i16]) -> usize {
    samples
        .chunks(160)
        .filter(|f| f.iter().any(|&s| s.unsigned_abs() > 64))
        .count()
}

pub fn ms_to_samples(ms: u128) -> usize {
    (ms * u128::from(PHONE_RATE) / 1000) as usize
}

/// Waits until every write the server queued so far is in the database.
pub async fn drain_writes(server: &Server) {
    server
        .state
        .queue()
        .flush(std::time::Duration::from_secs(10))
        .await
        .unwrap();
}

/// The organisation the server answered the call for.
pub fn org_of(report: &api::caller::CallReport) -> storage::OrgId {
    storage::OrgId(report.org.as_deref().unwrap().parse().unwrap())
}
