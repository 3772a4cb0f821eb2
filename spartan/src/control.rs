//! The operator's write channel: a Unix socket only root can open (0600,
//! and the peer's uid checked), one line per request, one line per answer.
//! The HTTP API stays read-only.
//!
//! Requests: `flush` (the whole answer cache) or `flush NAME` (every type of
//! one name). Answers: `ok flushed N` or `error ...`.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use hickory_proto::{rr::Name, serialize::binary::BinEncodable};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    task::JoinHandle,
};

use crate::cache::AnswerCache;

/// Longest request line read.
const MAX_REQUEST: usize = 512;
/// A client that says nothing for this long is closed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the control socket of the daemon using `pin_dir` lives.
pub fn socket_path(pin_dir: &Path) -> PathBuf {
    crate::fastpath::run_file(pin_dir, "control")
}

/// Serves the control socket until the task is aborted.
pub fn start(path: &Path, cache: Arc<AnswerCache>) -> Result<JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Only one daemon runs per pin directory (the instance lock is held):
    // a socket file left here is a dead daemon's.
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("making {} root-only", path.display()))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let cache = cache.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, serve(stream, &cache)).await;
            });
        }
    }))
}

async fn serve(stream: UnixStream, cache: &AnswerCache) -> std::io::Result<()> {
    let root = stream.peer_cred().is_ok_and(|c| c.uid() == 0);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read.take(MAX_REQUEST as u64))
        .read_line(&mut line)
        .await?;
    let answer = if !root {
        "error root only".to_string()
    } else {
        match execute(line.trim(), cache) {
            Ok(text) => format!("ok {text}"),
            Err(e) => format!("error {e:#}"),
        }
    };
    tracing::info!(request = line.trim(), %answer, "control request");
    write.write_all(format!("{answer}\n").as_bytes()).await
}

fn execute(request: &str, cache: &AnswerCache) -> Result<String> {
    let mut words = request.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("flush"), None, None) => Ok(format!("flushed {}", cache.flush(None))),
        (Some("flush"), Some(name), None) => {
            let wire = name_key(name)?;
            Ok(format!("flushed {}", cache.flush(Some(&wire))))
        }
        _ => bail!("unknown request {request:?} (flush [NAME])"),
    }
}

/// `name` as the cache keys it: lower-cased wire format.
pub fn name_key(name: &str) -> Result<Vec<u8>> {
    let mut parsed = Name::from_ascii(name).with_context(|| format!("{name:?} is not a name"))?;
    parsed.set_fqdn(true);
    Ok(parsed.to_lowercase().to_bytes()?)
}

/// Sends `request` to the daemon's control socket at `path`; its answer.
pub async fn request(path: &Path, request: &str) -> Result<String> {
    let mut stream = UnixStream::connect(path).await.with_context(|| {
        format!(
            "connecting to {} (is the daemon running, and are you root?)",
            path.display()
        )
    })?;
    stream.write_all(format!("{request}\n").as_bytes()).await?;
    let mut answer = String::new();
    tokio::time::timeout(
        REQUEST_TIMEOUT,
        BufReader::new(stream).read_line(&mut answer),
    )
    .await
    .context("the daemon did not answer")??;
    let answer = answer.trim().to_string();
    match answer.strip_prefix("ok ") {
        Some(text) => Ok(text.to_string()),
        None => bail!("the daemon refused: {answer}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_keyed_lower_case_and_fully_qualified() {
        assert_eq!(
            name_key("WWW.Example.com").unwrap(),
            b"\x03www\x07example\x03com\x00"
        );
        assert_eq!(name_key("a.b.").unwrap(), b"\x01a\x01b\x00");
        assert!(name_key("a..b").is_err());
    }
}
