//! A server killed with SIGKILL in the middle of a call loses no recording: at the next start
//! the WAV's header is repaired, the file is stored and the call gets its recording row.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::caller::{CallerConfig, Line, LineStart, place_call};
use media::{PHONE_RATE, testsignal};
use storage::{LocalRecordingStore, RecordingStore, Store};

const TOKEN: &str = "crash-test-token";

/// WAV header the recorder writes (RIFF, fmt, data chunk header).
const WAV_HEADER: u64 = 44;
/// Bytes per millisecond of the recording: 8 kHz, two channels of 16-bit samples.
const BYTES_PER_MS: u64 = 8 * 2 * 2;
/// Call audio on disk before the kill: 3 s, so the caller's speech (from the greeting's first
/// frame on) is well over the 1 s the left-channel check below needs.
const ON_DISK_MS: u64 = 3_000;

/// The one staged recording's length on disk, if there is one yet.
fn staged_len(staging: &Path) -> Option<u64> {
    let entry = std::fs::read_dir(staging).ok()?.flatten().next()?;
    Some(entry.metadata().ok()?.len())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn spawn_server(dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_voxanne"))
        .arg("serve")
        .env("TWILIO_AUTH_TOKEN", TOKEN)
        .env("VOXANNE_ENGINES", "test")
        .env("VOXANNE_DATA_DIR", dir)
        .env("VOXANNE_ADDR", format!("127.0.0.1:{port}"))
        .env_remove("DATABASE_URL")
        .env_remove("VOXANNE_PUBLIC_URL")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("server.log"))
                .unwrap(),
        )
        .spawn()
        .expect("start voxanne")
}

async fn wait_healthy(port: u16) {
    engines::models::install_tls_provider();
    for _ in 0..200 {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/health")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server did not become healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_survives_kill_9_mid_call() {
    let dir = tempfile::tempdir().unwrap();
    eprintln!("data dir: {}", dir.path().display());
    let port = free_port();
    let mut server = spawn_server(dir.path(), port);
    wait_healthy(port).await;

    let base = format!("http://127.0.0.1:{port}");
    let mut caller = CallerConfig::local(&base, TOKEN);
    caller.max_duration = Duration::from_secs(20);
    let sid = caller.call_sid.clone();
    // The caller talks from the greeting's first frame on, over the agent.
    let script = vec![Line::Speak {
        audio: testsignal::voice(PHONE_RATE, 10_000, 5),
        start: LineStart::Interrupt {
            after: Duration::ZERO,
        },
    }];
    let call = tokio::spawn(async move { place_call(&caller, &script).await });
    // Kill once the recording holds ON_DISK_MS of call audio (not after a wall-clock wait: on a
    // loaded machine the call may take seconds to get going). The budget only bounds a hang.
    let staging = dir.path().join("recordings").join(".staging");
    let mut waited = 0;
    while staged_len(&staging).is_none_or(|len| len < WAV_HEADER + ON_DISK_MS * BYTES_PER_MS) {
        assert!(
            waited < 1_200,
            "no {ON_DISK_MS} ms of recording within 60 s"
        );
        waited += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    let _ = call.await; // the caller sees the connection drop

    let staged: Vec<_> = std::fs::read_dir(&staging).unwrap().flatten().collect();
    assert_eq!(staged.len(), 1, "one recording left in staging");
    // Everything on disk at the kill (whole frames) is what the repair must recover.
    let on_disk_ms = (staged[0].metadata().unwrap().len() - WAV_HEADER) / BYTES_PER_MS;

    let mut server = spawn_server(dir.path(), port);
    wait_healthy(port).await;
    let store = Store::open(None, dir.path()).await.unwrap();
    let (org, _) = store.ensure_default_org().await.unwrap();
    let sid = storage::CallSid(sid);
    let mut recording = None;
    for _ in 0..100 {
        recording = store.get_recording(org, &sid).await.unwrap();
        if recording.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recording = recording.unwrap_or_else(|| {
        let log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
        panic!("recording not registered after restart; server log:\n{log}")
    });
    // Nothing that reached the disk is lost: the repair keeps every whole frame.
    assert!(
        (ON_DISK_MS..=on_disk_ms).contains(&(recording.duration_ms as u64))
            && recording.duration_ms as u64 + 1 >= on_disk_ms,
        "{} ms recovered of {on_disk_ms} ms on disk",
        recording.duration_ms
    );
    let path = LocalRecordingStore::in_data_dir(dir.path())
        .local_path(&recording.location)
        .unwrap();
    let mut wav = hound::WavReader::open(&path).expect("a valid WAV after repair");
    assert_eq!(wav.spec().channels, 2);
    let frames = u64::from(wav.duration());
    assert_eq!(frames * 1000 / 8_000, recording.duration_ms as u64);
    let samples: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
    let caller_voiced = samples
        .iter()
        .step_by(2)
        .filter(|s| s.unsigned_abs() > 1_000)
        .count();
    assert!(
        caller_voiced > 8_000,
        "the caller's speech is in the left channel"
    );
    let call = store.get_call(org, &sid).await.unwrap().expect("call row");
    assert_eq!(call.end_reason.as_deref(), Some("interrupted"));
    assert!(std::fs::read_dir(&staging).unwrap().next().is_none());
    server.kill().unwrap();
    server.wait().unwrap();
}
