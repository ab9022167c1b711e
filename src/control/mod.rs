//! The local control socket: how `hermes peers`, `hermes send` and `hermes stream` talk to a
//! running `hermes run` / `hermes listen`.
//!
//! A Unix socket at `DATA_DIR/control.sock`, mode 0600 (only the node's user may use it). The
//! client writes one request line, capped at 4 KiB (room for a stream name escaped in JSON) so
//! that a stray client cannot make the node buffer without limit:
//!
//! - `peers`, `stats`, `msgstats`, `outbox`, `id`: the server answers one line of JSON and closes
//!   (`id` is [`identity_json`] plus the bound `listen` addresses).
//! - `{"cmd":"send","to":…,"netuid":…,"len":…,"ttl_secs":…,"wait_ms":…}`, then `len` payload
//!   bytes: the node sends the message and answers once it is delivered, refused, or `wait_ms`
//!   has passed (`status` `delivered`, `failed`, `expired` or `queued`; a queued answer carries
//!   the `reason` the recipient has not been reached, when an attempt has failed).
//! - `{"cmd":"cancel","id":"<hex>"}`: drops a queued message from the outbox; answers with it.
//! - `{"cmd":"stream","to":…,"netuid":…,"name":…}` (`name` optional): the node opens the stream
//!   and answers `{"ready":true}` (or an error); the client then writes the data and shuts its
//!   side down; the node answers with the confirmed byte count once the recipient has confirmed
//!   (see [`crate::StreamWriter::finish`] for what a confirmation means).
//!
//! - `consensus`: every subnet's consensus status (epoch, elected validator, attestations, what
//!   this node signed, the last outcome) and why consensus is off, if it is.
//! - `transfers`: every Sync Engine transfer (one line of JSON).
//! - `{"cmd":"share","path":…,"to":…,"netuid":…,"via":…,"ttl_secs":…}`: the node offers the
//!   file and answers with the ticket.
//! - `{"cmd":"fetch","ticket":…,"out":…}`: the node starts the download and writes one
//!   `{"progress":…}` line per second, then the outcome.
//! - `{"cmd":"revoke","id":…}`: revokes an offer or cancels a download; answers with it.
//!
//! Every answer is one JSON line; errors are `{"error": "…"}`.

use crate::messages::{DeliveryEvent, MessageId, SendOptions};
use crate::{Error, RuntimeHandle};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};

/// Longest request line: room for the longest ticket string.
const MAX_LINE: u64 = 64 << 10;

pub mod consensus;
mod sync;
pub use sync::{fetch, parse_backend_arg, revoke, share, transfer_json};

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

#[derive(Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
enum Request {
    Send {
        to: String,
        netuid: u16,
        len: usize,
        ttl_secs: Option<u64>,
        wait_ms: u64,
    },
    Stream {
        to: String,
        netuid: u16,
        #[serde(default)]
        name: Option<String>,
    },
    Cancel {
        id: String,
    },
    Share {
        path: PathBuf,
        to: String,
        netuid: u16,
        #[serde(default)]
        via: Option<String>,
        #[serde(default)]
        ttl_secs: Option<u64>,
    },
    Fetch {
        ticket: String,
        out: PathBuf,
    },
    Revoke {
        id: String,
    },
}

pub(crate) fn error(e: impl std::fmt::Display) -> serde_json::Value {
    serde_json::json!({ "error": e.to_string() })
}

/// Waits up to `wait` for the outcome of message `id`: `{"id", "status"}` with status
/// `delivered`, `failed` (with `reason`), `expired`, or `queued` when nothing happened in time.
pub async fn wait_outcome(
    events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>,
    id: MessageId,
    wait: Duration,
) -> serde_json::Value {
    let r = tokio::time::timeout(wait, async {
        loop {
            match events.recv().await {
                Ok(DeliveryEvent::Delivered { id: got, .. }) if got == id => {
                    return serde_json::json!({ "id": id.to_hex(), "status": "delivered" })
                }
                Ok(DeliveryEvent::Failed { id: got, reason, .. }) if got == id => {
                    return serde_json::json!({ "id": id.to_hex(), "status": "failed", "reason": reason })
                }
                Ok(DeliveryEvent::Expired { id: got, .. }) if got == id => {
                    return serde_json::json!({ "id": id.to_hex(), "status": "expired" })
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return serde_json::json!({ "id": id.to_hex(), "status": "queued" })
                }
                _ => {}
            }
        }
    })
    .await;
    r.unwrap_or_else(|_| serde_json::json!({ "id": id.to_hex(), "status": "queued" }))
}

/// [`wait_outcome`], and for a message still queued at the end, why its recipient has not been
/// reached (`reason`), as far as this node can tell.
pub async fn outcome(
    rt: &RuntimeHandle,
    events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>,
    id: MessageId,
    wait: Duration,
) -> serde_json::Value {
    let mut answer = wait_outcome(events, id, wait).await;
    if answer["status"] == "queued" {
        let reason = match rt.outbox().await {
            Ok(list) => list
                .into_iter()
                .find(|e| e.id == id)
                .and_then(|e| e.last_error),
            Err(_) => None,
        };
        answer["reason"] = reason
            .unwrap_or_else(|| "no connection attempt has finished yet".into())
            .into();
    }
    answer
}

/// An outbox entry as JSON (`hermes outbox --json` prints these).
pub fn outbox_entry_json(e: &crate::messages::OutboxEntry) -> serde_json::Value {
    serde_json::json!({
        "id": e.id.to_hex(), "to": e.to, "netuid": e.netuid, "size": e.len,
        "created_at": e.created_at, "expires_at": e.expires_at, "last_error": e.last_error,
    })
}

fn message_stats_json(s: &crate::messages::MessageStats) -> serde_json::Value {
    serde_json::json!({
        "sent": s.sent,
        "delivered": s.delivered,
        "received": s.received,
        "duplicates": s.duplicates,
        "outbox": s.outbox,
        "outbox_bytes": s.outbox_bytes,
        "sessions_in": s.sessions.0,
        "sessions_out": s.sessions.1,
        "streams_in": s.streams.0,
        "streams_out": s.streams.1,
        "rejected": s.rejected.iter().filter(|(_, n)| *n > 0).map(|(r, n)| (r.as_str().to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
    })
}

/// A node's identity as `hermes id --json` prints it: SS58, public key, peer id, transport key
/// type and the binding record (decoded, and `encoded` as 0x-hex).
pub fn identity_json(info: &crate::IdentityInfo) -> serde_json::Value {
    let b = &info.binding;
    serde_json::json!({
        "ss58": info.ss58,
        "public_key": info.hotkey.to_hex(),
        "peer_id": info.peer_id.to_base58(),
        "transport_key_type": info.transport_key_type,
        "binding": {
            "netuids": b.record.netuids,
            "prekey": format!("0x{}", hex::encode(b.record.prekey)),
            "issued_at": b.record.issued_at,
            "expires_at": b.record.expires_at,
            "signature": format!("0x{}", hex::encode(b.signature)),
            "encoded": format!("0x{}", hex::encode(b.encode())),
        }
    })
}

async fn simple(rt: &RuntimeHandle, cmd: &str) -> serde_json::Value {
    match cmd {
        "peers" => match rt.peers().await {
            Ok(peers) => serde_json::json!({ "peers": peers.iter().map(|p| serde_json::json!({
                "ss58": p.ss58,
                "peer_id": p.peer_id.to_base58(),
                "netuids": p.netuids,
                "addresses": p.addresses.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>() }),
            Err(e) => error(e),
        },
        "stats" => match (rt.firewall_stats().await, rt.message_stats().await) {
            (Ok(s), Ok(m)) => serde_json::json!({
                "denied": s.denied.iter().map(|(r, n)| (r.as_str().to_string(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
                "registry_entries": s.registry_entries,
                "chain_stale": s.chain_stale,
                "messages": message_stats_json(&m),
            }),
            (Err(e), _) | (_, Err(e)) => error(e),
        },
        "msgstats" => match rt.message_stats().await {
            Ok(m) => message_stats_json(&m),
            Err(e) => error(e),
        },
        "outbox" => match rt.outbox().await {
            Ok(list) => {
                serde_json::json!({ "outbox": list.iter().map(outbox_entry_json).collect::<Vec<_>>() })
            }
            Err(e) => error(e),
        },
        "consensus" => consensus::answer(rt).await,
        "transfers" => match rt.transfers().await {
            Ok(list) => serde_json::json!({
                "transfers": list.iter().map(|t| transfer_json(t, rt.ss58_prefix())).collect::<Vec<_>>()
            }),
            Err(e) => error(e),
        },
        "id" => match (rt.identity().await, rt.listen_addrs().await) {
            (Ok(i), Ok(addrs)) => {
                let mut v = identity_json(&i);
                v["listen"] = addrs.iter().map(|a| a.to_string()).collect();
                v
            }
            (Err(e), _) | (_, Err(e)) => error(e),
        },
        other => error(format!(
            "unknown command `{other}`; expected peers, stats, msgstats, outbox, id, consensus, transfers, or a send/stream request"
        )),
    }
}

pub(crate) async fn write_line<W: tokio::io::AsyncWrite + Unpin>(
    w: &mut W,
    v: &serde_json::Value,
) -> std::io::Result<()> {
    w.write_all(format!("{v}\n").as_bytes()).await?;
    w.flush().await
}

async fn answer(rt: RuntimeHandle, stream: UnixStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    (&mut r).take(MAX_LINE).read_line(&mut line).await?;
    let line = line.trim();
    if !line.starts_with('{') {
        let reply = simple(&rt, line).await;
        write_line(&mut w, &reply).await?;
        return w.shutdown().await;
    }
    let req: Request = match serde_json::from_str(line) {
        Ok(r) => r,
        Err(e) => {
            write_line(&mut w, &error(format!("bad request: {e}"))).await?;
            return w.shutdown().await;
        }
    };
    let reply = match req {
        Request::Send {
            to,
            netuid,
            len,
            ttl_secs,
            wait_ms,
        } => {
            // Bounded by the protocol's limit before anything is allocated; the configured
            // limit is checked by `send`.
            if len > 64 << 20 {
                error(format!(
                    "message of {len} bytes exceeds the protocol maximum of 64 MiB"
                ))
            } else {
                let mut payload = vec![0u8; len];
                r.read_exact(&mut payload).await?;
                match rt.delivery_events() {
                    Err(e) => error(e),
                    Ok(mut events) => {
                        let opts = SendOptions {
                            ttl: ttl_secs.map(Duration::from_secs),
                        };
                        match rt.send_with(&to, netuid, payload, opts).await {
                            Ok(id) => {
                                outcome(&rt, &mut events, id, Duration::from_millis(wait_ms)).await
                            }
                            Err(e) => error(e),
                        }
                    }
                }
            }
        }
        Request::Cancel { id } => match parse_id(&id) {
            Err(e) => error(e),
            Ok(id) => match rt.cancel(id).await {
                Ok(e) => outbox_entry_json(&e),
                Err(e) => error(e),
            },
        },
        Request::Share {
            path,
            to,
            netuid,
            via,
            ttl_secs,
        } => sync::answer_share(&rt, &path, &to, netuid, via.as_deref(), ttl_secs).await,
        Request::Fetch { ticket, out } => {
            return sync::answer_fetch(&rt, &ticket, &out, &mut w).await;
        }
        Request::Revoke { id } => sync::answer_revoke(&rt, &id).await,
        Request::Stream { to, netuid, name } => {
            match rt.open_stream_named(&to, netuid, name.as_deref()).await {
                Err(e) => error(e),
                Ok(mut writer) => {
                    write_line(&mut w, &serde_json::json!({ "ready": true })).await?;
                    match copy(&mut r, &mut writer).await {
                        Err(e) => error(format!("reading the data: {e}")),
                        Ok(_) => match writer.finish().await {
                            Ok(rep) => serde_json::json!({
                                "bytes": rep.bytes,
                                "elapsed_ms": rep.elapsed.as_millis() as u64,
                            }),
                            Err(e) => error(e),
                        },
                    }
                }
            }
        }
    };
    write_line(&mut w, &reply).await?;
    w.shutdown().await
}

/// Parses a message id as printed by `send` and `outbox` (32 hex digits).
///
/// # Errors
/// [`Error::Invalid`] naming what is wrong.
pub fn parse_id(s: &str) -> Result<MessageId, Error> {
    MessageId::from_hex(s).map_err(Error::Invalid)
}

/// Has a running node drop a queued message; answers with the dropped entry.
///
/// # Errors
/// [`Error::Network`] with the node's reason.
pub async fn cancel(path: &Path, id: MessageId) -> Result<serde_json::Value, Error> {
    ask(
        path,
        &serde_json::json!({ "cmd": "cancel", "id": id.to_hex() }),
    )
    .await
}

/// Copies `r` into a stream writer until end of input.
pub async fn copy<R: AsyncRead + Unpin>(
    r: &mut R,
    w: &mut crate::StreamWriter,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = r.read(&mut buf).await?;
        if k == 0 {
            return Ok(n);
        }
        w.write_all(&buf[..k]).await?;
        n += k as u64;
    }
}

pub(crate) fn bad(e: impl std::fmt::Display) -> Error {
    Error::Network(e.to_string())
}

pub(crate) async fn connect(path: &Path) -> Result<UnixStream, Error> {
    UnixStream::connect(path).await.map_err(|e| {
        Error::Network(format!(
            "no running node at {} ({e}); start one with `hermes run`",
            path.display()
        ))
    })
}

pub(crate) async fn read_answer<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Result<serde_json::Value, Error> {
    let mut out = String::new();
    (&mut *r)
        .take(16 << 20)
        .read_line(&mut out)
        .await
        .map_err(bad)?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| Error::Network(format!("bad answer: {e}")))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(Error::Network(e.to_string()));
    }
    Ok(v)
}

/// Whether a node answers on `path`.
pub async fn is_running(path: &Path) -> bool {
    UnixStream::connect(path).await.is_ok()
}

/// Sends one command to a running node and returns its JSON answer.
///
/// # Errors
/// [`Error::Network`] if no node is listening on `path` or the answer is not JSON.
pub async fn request(path: &Path, command: &str) -> Result<serde_json::Value, Error> {
    let (mut r, _w) = open(path, command).await?;
    read_answer(&mut r).await
}

/// [`request`] with a JSON command.
pub(crate) async fn ask(path: &Path, req: &serde_json::Value) -> Result<serde_json::Value, Error> {
    request(path, &req.to_string()).await
}

/// Connects to the node on `path` and sends `command` as one line; returns the answer side
/// (buffered) and the request side, for commands followed by data or answered more than once.
pub(crate) async fn open(
    path: &Path,
    command: &str,
) -> Result<(BufReader<OwnedReadHalf>, OwnedWriteHalf), Error> {
    let (r, mut w) = connect(path).await?.into_split();
    w.write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(bad)?;
    Ok((BufReader::new(r), w))
}

/// Has a running node send a message; answers with its id and status.
///
/// # Errors
/// [`Error::Network`] with the node's reason.
pub async fn send(
    path: &Path,
    to: &str,
    netuid: u16,
    payload: &[u8],
    ttl: Option<Duration>,
    wait: Duration,
) -> Result<serde_json::Value, Error> {
    let req = serde_json::json!({
        "cmd": "send", "to": to, "netuid": netuid, "len": payload.len(),
        "ttl_secs": ttl.map(|t| t.as_secs()), "wait_ms": wait.as_millis() as u64,
    });
    let (mut r, mut w) = open(path, &req.to_string()).await?;
    w.write_all(payload).await.map_err(bad)?;
    read_answer(&mut r).await
}

/// Has a running node stream everything `data` yields to `to`, named `name` if given;
/// `progress` is called with the bytes handed over so far. Answers with the confirmed byte
/// count.
///
/// # Errors
/// [`Error::Network`] with the node's reason.
pub async fn stream<R: AsyncRead + Unpin>(
    path: &Path,
    to: &str,
    netuid: u16,
    name: Option<&str>,
    data: &mut R,
    mut progress: impl FnMut(u64),
) -> Result<serde_json::Value, Error> {
    let req = serde_json::json!({ "cmd": "stream", "to": to, "netuid": netuid, "name": name });
    let (mut r, mut w) = open(path, &req.to_string()).await?;
    read_answer(&mut r).await?;
    let mut buf = vec![0u8; 256 << 10];
    let mut n = 0u64;
    loop {
        let k = data.read(&mut buf).await.map_err(bad)?;
        if k == 0 {
            break;
        }
        w.write_all(&buf[..k]).await.map_err(bad)?;
        n += k as u64;
        progress(n);
    }
    w.shutdown().await.map_err(bad)?;
    read_answer(&mut r).await
}
