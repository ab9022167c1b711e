//! The Sync Engine's control-socket commands: `share`, `fetch`, `transfers`, `revoke`.

use super::{ask, error, open, read_answer, write_line};
use crate::sync::{Backend, Direction, OfferOptions, TransferId, TransferInfo};
use crate::{Error, RuntimeHandle};
use std::path::Path;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

/// How often a running fetch reports its progress on the control socket.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// A transfer as JSON: `id`, `direction` (`offer`/`download`), `peer` (SS58), `path`, `size`,
/// `done` (bytes), `state`, `backend`, `expires_at`, `rate` (bytes/s).
pub fn transfer_json(t: &TransferInfo, ss58_prefix: u16) -> serde_json::Value {
    serde_json::json!({
        "id": t.id.to_hex(),
        "direction": match t.direction { Direction::Offer => "offer", Direction::Download => "download" },
        "peer": t.peer.to_ss58(ss58_prefix),
        "path": t.path.display().to_string(),
        "size": t.size,
        "done": t.done_bytes,
        "state": t.state.to_string(),
        "backend": t.backend.map(|b| b.to_string()),
        "expires_at": t.expires_at,
        "rate": t.rate,
    })
}

/// `--via`: `embedded`, `s3`, or `None` for the config's default.
///
/// # Errors
/// [`Error::Invalid`] for anything else.
pub fn parse_backend_arg(via: Option<&str>) -> Result<Option<Backend>, Error> {
    match via {
        None => Ok(None),
        Some("embedded") => Ok(Some(Backend::Embedded)),
        Some("s3") => Ok(Some(Backend::S3)),
        Some(other) => Err(Error::Invalid(format!(
            "--via `{other}`: expected `embedded` or `s3`"
        ))),
    }
}

pub(super) async fn answer_share(
    rt: &RuntimeHandle,
    path: &Path,
    to: &str,
    netuid: u16,
    via: Option<&str>,
    ttl_secs: Option<u64>,
) -> serde_json::Value {
    let opts = match parse_backend_arg(via) {
        Ok(via) => OfferOptions {
            via,
            ttl: ttl_secs.map(Duration::from_secs),
            ..OfferOptions::default()
        },
        Err(e) => return error(e),
    };
    match rt.offer(path, to, netuid, opts).await {
        Ok(t) => serde_json::json!({
            "id": t.body.transfer_id.to_hex(),
            "ticket": t.to_string(),
            "size": t.body.layout.size(),
            "expires_at": t.body.expires_at,
        }),
        Err(e) => error(e),
    }
}

pub(super) async fn answer_revoke(rt: &RuntimeHandle, id: &str) -> serde_json::Value {
    match TransferId::from_hex(id) {
        Err(e) => error(e),
        Ok(id) => match rt.revoke(id).await {
            Ok(t) => transfer_json(&t, rt.ss58_prefix()),
            Err(e) => error(e),
        },
    }
}

fn progress_json(p: &crate::sync::Progress) -> serde_json::Value {
    serde_json::json!({ "progress": {
        "done": p.done_bytes, "size": p.total_bytes, "rate": p.rate,
        "eta_secs": p.eta.map(|d| d.as_secs()),
    }})
}

pub(super) async fn answer_fetch(
    rt: &RuntimeHandle,
    ticket: &str,
    out: &Path,
    w: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let t = match rt.fetch(ticket, out).await {
        Ok(t) => t,
        Err(e) => {
            write_line(w, &error(e)).await?;
            return w.shutdown().await;
        }
    };
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let outcome = loop {
        tokio::select! {
            r = t.wait() => break r,
            _ = tick.tick() => {
                let p = *t.progress.borrow();
                // A client that went away stops getting reports; the download goes on.
                if write_line(w, &progress_json(&p)).await.is_err() {
                    return Ok(());
                }
            }
        }
    };
    let p = *t.progress.borrow();
    let reply = match outcome {
        Ok(()) => serde_json::json!({
            "id": t.id.to_hex(), "path": t.dest.display().to_string(), "size": p.total_bytes,
        }),
        Err(e) => error(e),
    };
    write_line(w, &reply).await?;
    w.shutdown().await
}

/// Has a running node offer `path` to `to`; answers with `id`, `ticket`, `size`, `expires_at`.
///
/// # Errors
/// [`Error::Network`] with the node's reason.
pub async fn share(
    sock: &Path,
    path: &Path,
    to: &str,
    netuid: u16,
    via: Option<&str>,
    ttl: Option<Duration>,
) -> Result<serde_json::Value, Error> {
    let req = serde_json::json!({
        "cmd": "share", "path": path, "to": to, "netuid": netuid, "via": via,
        "ttl_secs": ttl.map(|t| t.as_secs()),
    });
    ask(sock, &req).await
}

/// Has a running node download what `ticket` names into `out`; `progress(done, size, rate)`
/// is called with each report. Answers with `id`, `path`, `size` once the file is in place.
///
/// # Errors
/// [`Error::Network`] with the node's reason.
pub async fn fetch(
    sock: &Path,
    ticket: &str,
    out: &Path,
    mut progress: impl FnMut(u64, u64, f64),
) -> Result<serde_json::Value, Error> {
    let req = serde_json::json!({ "cmd": "fetch", "ticket": ticket.trim(), "out": out });
    let (mut r, _w) = open(sock, &req.to_string()).await?;
    loop {
        let v = read_answer(&mut r).await?;
        match v.get("progress") {
            Some(p) => progress(
                p["done"].as_u64().unwrap_or(0),
                p["size"].as_u64().unwrap_or(0),
                p["rate"].as_f64().unwrap_or(0.0),
            ),
            None => return Ok(v),
        }
    }
}

/// Has a running node revoke offer `id` or cancel download `id`; answers with the transfer.
///
/// # Errors
/// [`Error::Network`] with the node's reason.
pub async fn revoke(sock: &Path, id: TransferId) -> Result<serde_json::Value, Error> {
    ask(
        sock,
        &serde_json::json!({ "cmd": "revoke", "id": id.to_hex() }),
    )
    .await
}
