//! The `voxanne` binary's clinic and chat commands, as staff run them: `clinic apply` on the
//! example file (twice: the second changes nothing), `clinic export`, and `chat --json` over
//! stdin/stdout, whose booking lands in the same database a call would use. Needs the fetched
//! models (MiniLM), like the other model tests (`VOXANNE_MODELS_DIR`, scripts/test.sh sets it).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn models_dir() -> PathBuf {
    std::env::var_os("VOXANNE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/voxanne/models")
        })
}

fn voxanne(data: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_voxanne"));
    c.env("VOXANNE_DATA_DIR", data)
        .env("VOXANNE_MODELS_DIR", models_dir())
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    c
}

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/bright-smile.toml")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("voxanne runs");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn clinic_apply_export_and_chat_json() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(voxanne(dir.path()).args(["clinic", "apply"]).arg(example()));
    assert!(
        first.contains("(created)") && first.contains("config updated"),
        "{first}"
    );
    let again = run(voxanne(dir.path()).args(["clinic", "apply"]).arg(example()));
    assert!(
        again.contains("(existing)")
            && again.contains("config unchanged")
            && again.contains("0 chunk(s) embedded"),
        "{again}"
    );
    let exported = run(voxanne(dir.path()).args(["clinic", "export", "bright-smile"]));
    assert!(
        exported.contains("name = \"Bright Smile Dental\""),
        "{exported}"
    );
    assert!(
        exported.contains("transfer_number = \"+442071234500\""),
        "{exported}"
    );

    // A bad file is refused with every problem named, and changes nothing.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(example())
            .unwrap()
            .replace("Europe/London", "Mars/Olympus")
            .replace("minutes = 30", "minutes = 0"),
    )
    .unwrap();
    let out = voxanne(dir.path())
        .args(["clinic", "apply"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Mars/Olympus") && err.contains("minutes"),
        "{err}"
    );

    let mut chat = voxanne(dir.path())
        .args([
            "chat",
            "--org",
            "bright-smile",
            "--from",
            "+447700900123",
            "--now",
            "2026-12-01T10:00",
            "--json",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .as_mut()
        .unwrap()
        .write_all(b"Can I book a filling for tomorrow at 2?\nAisha Rahman\nyes please\nIs there parking?\nno that's all, bye\n")
        .unwrap();
    let out = chat.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let says: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "say")
        .filter_map(|l| l["text"].as_str())
        .collect();
    assert!(says[0].contains("Bright Smile Dental"), "{says:?}");
    let book = lines
        .iter()
        .find(|l| l["type"] == "tool" && l["name"] == "book")
        .expect("a book tool call");
    assert_eq!(book["arguments"]["service"], "Filling");
    assert_eq!(book["arguments"]["name"], "Aisha Rahman");
    assert_eq!(book["arguments"]["phone"], "+447700900123");
    assert_eq!(book["arguments"]["starts_at"], "2026-12-02T14:00:00Z");
    assert_eq!(book["result"]["outcome"], "booked");
    assert!(says.iter().any(|s| s.contains("free parking")), "{says:?}");
    assert_eq!(lines.last().unwrap()["action"], "hangup");

    // The same caller again: the booking is in the database, so they are known.
    let mut chat = voxanne(dir.path())
        .args([
            "chat",
            "--org",
            "bright-smile",
            "--from",
            "+447700900123",
            "--now",
            "2026-12-01T10:05",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .as_mut()
        .unwrap()
        .write_all(b"I need to cancel my appointment\nyes\n")
        .unwrap();
    let out = String::from_utf8(chat.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        out.contains("cancel your filling tomorrow at two o'clock"),
        "{out}"
    );
    assert!(out.contains("is cancelled"), "{out}");
}
