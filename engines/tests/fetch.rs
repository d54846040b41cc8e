//! The model fetcher against a local HTTP server standing in for PyPI's file host: a file that
//! does not match its pinned SHA-256 is refused and nothing is installed; a host that answers
//! 404 is an error naming the URL.

use std::path::Path;

use engines::models::{Fetcher, FileStatus, ModelError, ModelId, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves every GET with `status` and `body`, forever.
async fn serve(status: &'static str, body: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(body).await;
            });
        }
    });
    format!("http://{addr}/")
}

fn nothing_installed(dir: &Path, model: ModelId) {
    for (path, st) in status(dir, model) {
        assert_eq!(st, FileStatus::Missing, "{} was installed", path.display());
    }
}

#[tokio::test]
async fn a_tampered_download_is_refused_and_nothing_is_installed() {
    let base = serve("200 OK", b"not the silero wheel").await;
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::with_base(&base).unwrap();
    let mut lines = Vec::new();
    let err = fetcher
        .fetch(dir.path(), ModelId::SileroVad, &mut |l: &str| {
            lines.push(l.to_string())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, ModelError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("expected 93b41953"), "{err}");
    nothing_installed(dir.path(), ModelId::SileroVad);
}

#[tokio::test]
async fn a_missing_file_on_the_host_is_an_error_naming_the_url() {
    let base = serve("404 Not Found", b"").await;
    let dir = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::with_base(&base).unwrap();
    let err = fetcher
        .fetch(dir.path(), ModelId::OnnxRuntime, &mut |_: &str| {})
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("HTTP 404") && text.contains("onnxruntime-1.22.1"),
        "{text}"
    );
    nothing_installed(dir.path(), ModelId::OnnxRuntime);
}
