//! The local control socket: how `hermes peers` talks to a running `hermes run`.
//!
//! A Unix socket at `DATA_DIR/control.sock`, mode 0600 (only the node's user may query it).
//! Protocol: the client writes one command line (`peers`, `stats` or `id`), the server answers
//! with one line of JSON and closes. Lines are capped at 1 KiB so a stray client cannot make the
//! node buffer without limit.

use crate::{Error, RuntimeHandle};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket path for a data dir.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

/// Serves the control socket until the runtime stops or the future is dropped.
///
/// # Errors
/// [`Error::Startup`] if the socket cannot be bound.
pub async fn serve(rt: RuntimeHandle, path: PathBuf) -> Result<(), Error> {
    // A socket file left by a crashed node is stale: the data-dir lock proves nobody serves it.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::Startup(format!("cannot bind {}: {e}", path.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let rt = rt.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(rt, stream).await {
                tracing::debug!(error = %e, "control client failed");
            }
        });
    }
}

async fn answer(rt: RuntimeHandle, stream: UnixStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r.take(1024)).read_line(&mut line).await?;
    let reply = match line.trim() {
        "peers" => match rt.peers().await {
            Ok(peers) => serde_json::json!({ "peers": peers.iter().map(|p| serde_json::json!({
                "ss58": p.ss58,
                "peer_id": p.peer_id.to_base58(),
                "netuids": p.netuids,
                "addresses": p.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>() }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        },
        "stats" => match rt.firewall_stats().await {
            Ok(s) => serde_json::json!({
                "denied": s.denied.iter().map(|(r, n)| (r.as_str().to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
                "registry_entries": s.registry_entries,
            }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        },
        "id" => match (rt.identity().await, rt.listen_addrs().await) {
            (Ok(i), Ok(addrs)) => serde_json::json!({
                "ss58": i.ss58,
                "peer_id": i.peer_id.to_base58(),
                "listen": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            }),
            (Err(e), _) | (_, Err(e)) => serde_json::json!({ "error": e.to_string() }),
        },
        other => {
            serde_json::json!({ "error": format!("unknown command `{other}`; expected peers, stats or id") })
        }
    };
    w.write_all(format!("{reply}\n").as_bytes()).await?;
    w.shutdown().await
}

/// Sends one command to a running node and returns its JSON answer.
///
/// # Errors
/// [`Error::Network`] if no node is listening on `path` or the answer is not JSON.
pub async fn request(path: &Path, command: &str) -> Result<serde_json::Value, Error> {
    let mut s = UnixStream::connect(path).await.map_err(|e| {
        Error::Network(format!(
            "no running node at {} ({e}); start one with `hermes run`",
            path.display()
        ))
    })?;
    s.write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(|e| Error::Network(e.to_string()))?;
    let mut out = String::new();
    s.take(16 << 20)
        .read_to_string(&mut out)
        .await
        .map_err(|e| Error::Network(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::Network(format!("bad answer: {e}")))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(Error::Network(e.to_string()));
    }
    Ok(v)
}
