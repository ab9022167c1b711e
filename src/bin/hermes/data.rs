//! `hermes send`, `hermes listen` and `hermes stream`: the data plane from the command line.
//!
//! `send` and `stream` go through the node already running on the config's data dir (its control
//! socket) when there is one, and otherwise start the node for the duration of the command.

use crate::node::{serve, Banner};
use crate::{block_on, outln, parse_hex};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use hermes::proto::Hotkey;
use hermes::{control, Config, DeliveryEvent, Inbound, IncomingStream, Runtime};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// Exit status of a message still waiting in the outbox.
const EXIT_QUEUED: u8 = 3;

#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub(crate) struct MessageBody {
    /// The message as UTF-8 text.
    #[arg(long)]
    message: Option<String>,
    /// The message is this file's content (`-` for stdin).
    #[arg(long)]
    file: Option<PathBuf>,
    /// The message as 0x-prefixed hex bytes.
    #[arg(long)]
    hex: Option<String>,
}

impl MessageBody {
    pub(crate) fn bytes(&self) -> Result<Vec<u8>> {
        if let Some(m) = &self.message {
            return Ok(m.as_bytes().to_vec());
        }
        if let Some(h) = &self.hex {
            return parse_hex("--hex", h);
        }
        match &self.file {
            Some(p) if p.as_os_str() == "-" => {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                    .context("--file -: cannot read stdin")?;
                Ok(v)
            }
            Some(p) => {
                std::fs::read(p).with_context(|| format!("--file: cannot read {}", p.display()))
            }
            None => bail!("give one of --message, --file or --hex"),
        }
    }
}

fn check_to(to: &str) -> Result<()> {
    Hotkey::from_ss58(to)
        .map(|_| ())
        .map_err(|e| anyhow!("--to: {e}"))
}

/// Starts the node of `cfg` quietly for a one-off command.
pub(crate) async fn one_off(mut cfg: Config) -> Result<hermes::RuntimeHandle> {
    if std::env::var_os("RUST_LOG").is_none() {
        cfg.log.level = "warn".into();
    }
    Ok(Runtime::builder(cfg).start().await?)
}

/// Answers one command: from the node already running on `cfg`'s data dir when there is one
/// (`running` talks to its control socket), or else from a node started for this command alone
/// (`local` runs on it, then the node shuts down).
pub(crate) async fn on_node<R, L>(
    cfg: Config,
    running: impl FnOnce(PathBuf) -> R,
    local: impl FnOnce(hermes::RuntimeHandle) -> L,
) -> Result<serde_json::Value>
where
    R: std::future::Future<Output = Result<serde_json::Value, hermes::Error>>,
    L: std::future::Future<Output = Result<serde_json::Value, hermes::Error>>,
{
    let sock = control::socket_path(&cfg.data_dir);
    if control::is_running(&sock).await {
        return Ok(running(sock).await?);
    }
    let rt = one_off(cfg).await?;
    let answer = local(rt.clone()).await;
    rt.shutdown().await?;
    Ok(answer?)
}

fn rate(bytes: u64, d: Duration) -> String {
    format!(
        "{:.1} MiB/s",
        bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64().max(1e-9)
    )
}

pub(crate) fn send(
    config: &Path,
    to: &str,
    netuid: u16,
    payload: &[u8],
    ttl: Option<Duration>,
    wait: Duration,
) -> Result<ExitCode> {
    let cfg = Config::load(config)?;
    check_to(to)?;
    let max = cfg.messages.max_size.0;
    if payload.len() as u64 > max {
        bail!(
            "the message is {} bytes; messages.max_size is {max} bytes (send large payloads with `hermes stream`)",
            payload.len()
        );
    }
    let sock = control::socket_path(&cfg.data_dir);
    let answer = block_on(async {
        if control::is_running(&sock).await {
            return Ok::<_, anyhow::Error>(
                control::send(&sock, to, netuid, payload, ttl, wait).await?,
            );
        }
        let rt = one_off(cfg).await?;
        let mut events = rt.delivery_events()?;
        let sent = rt
            .send_with(to, netuid, payload.to_vec(), hermes::SendOptions { ttl })
            .await;
        let answer = match sent {
            Ok(id) => control::outcome(&rt, &mut events, id, wait).await,
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        };
        rt.shutdown().await?;
        Ok(answer)
    })?;
    if let Some(e) = answer["error"].as_str() {
        bail!("{e}");
    }
    let id = answer["id"].as_str().unwrap_or("?");
    match answer["status"].as_str() {
        Some("delivered") => {
            outln!(
                "delivered {id} to {to} ({} bytes, end-to-end encrypted)",
                payload.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Some("failed") => {
            eprintln!(
                "refused by {to}: {} (message {id} dropped)",
                answer["reason"].as_str().unwrap_or("no reason given")
            );
            Ok(ExitCode::from(1))
        }
        Some("expired") => {
            eprintln!("message {id} expired before {to} could be reached");
            Ok(ExitCode::from(1))
        }
        _ => {
            outln!(
                "queued {id} for {to}: not confirmed within {} ({}); it stays in the outbox and is retried whenever this node runs, until its TTL ends (`hermes outbox` lists it, `hermes outbox cancel {id}` drops it)",
                humantime::format_duration(wait),
                answer["reason"].as_str().unwrap_or("no reason known yet")
            );
            Ok(ExitCode::from(EXIT_QUEUED))
        }
    }
}

/// A printable preview of a payload: its text when it is text, else the first bytes in hex.
fn preview(bytes: &[u8]) -> (bool, String) {
    match std::str::from_utf8(bytes) {
        Ok(t) if t.chars().all(|c| !c.is_control() || c == '\n' || c == '\t') => {
            let mut p: String = t.chars().take(200).collect();
            if t.chars().count() > 200 {
                p.push('…');
            }
            (true, p.escape_debug().to_string())
        }
        _ => {
            let n = bytes.len().min(32);
            let mut p = format!("0x{}", hex::encode(&bytes[..n]));
            if bytes.len() > n {
                p.push('…');
            }
            (false, p)
        }
    }
}

/// Prints a message; returns whether it was written (then it may be acknowledged).
fn print_message(m: &Inbound, json: bool) -> bool {
    let (text, p) = preview(&m.bytes);
    if json {
        let mut v = serde_json::json!({
            "type": "message", "from": m.from, "netuid": m.netuid, "id": m.id.to_hex(),
            "size": m.bytes.len(), "sent_at": m.sent_at,
        });
        v[if text { "text" } else { "hex" }] = if text {
            serde_json::Value::String(String::from_utf8_lossy(&m.bytes).into_owned())
        } else {
            serde_json::Value::String(format!("0x{}", hex::encode(&m.bytes)))
        };
        crate::out_line(format_args!("{v}"))
    } else {
        crate::out_line(format_args!(
            "message {} from {} (netuid {}, {} bytes): {}",
            m.id,
            m.from,
            m.netuid,
            m.bytes.len(),
            if text { format!("\"{p}\"") } else { p }
        ))
    }
}

fn bytes_bar(total: Option<u64>, what: &str) -> ProgressBar {
    let pb = match total {
        Some(t) => {
            let pb = ProgressBar::new(t);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ) {
                pb.set_style(style.progress_chars("=> "));
            }
            pb
        }
        None => {
            let pb = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
            {
                pb.set_style(style);
            }
            pb
        }
    };
    pb.set_message(what.to_string());
    pb
}

/// Reads an incoming stream to its end (saving it under `save_dir` if given) and reports it.
/// A saved stream is confirmed to its sender only once its file is in place.
async fn receive_stream(mut s: IncomingStream, save_dir: Option<std::path::PathBuf>, json: bool) {
    let started = Instant::now();
    let pb = bytes_bar(None, &format!("stream {} from {}", s.id, s.from));
    let part = save_dir.as_ref().map(|d| d.join(format!("{}.part", s.id)));
    if part.is_some() {
        s.reader.confirm_later();
    }
    let result: Result<(u64, Option<PathBuf>)> = async {
        let mut file = match &part {
            Some(p) => Some(
                tokio::fs::File::create(p)
                    .await
                    .with_context(|| format!("cannot create {}", p.display()))?,
            ),
            None => None,
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = tokio::io::AsyncReadExt::read(&mut s.reader, &mut buf).await?;
            if k == 0 {
                break;
            }
            if let Some(f) = file.as_mut() {
                tokio::io::AsyncWriteExt::write_all(f, &buf[..k]).await?;
            }
            n += k as u64;
            pb.set_position(n);
        }
        if let Some(mut f) = file {
            tokio::io::AsyncWriteExt::flush(&mut f).await?;
            f.sync_all().await?;
        }
        let path = match (&save_dir, &part) {
            (Some(dir), Some(part)) => {
                let name = s.name.clone().unwrap_or_else(|| format!("{}.bin", s.id));
                let path = place(part, dir, &name)?;
                s.reader.confirm()?;
                Some(path)
            }
            _ => None,
        };
        Ok((n, path))
    }
    .await;
    pb.finish_and_clear();
    let elapsed = started.elapsed();
    match result {
        Ok((n, path)) => {
            let saved = path
                .as_ref()
                .map(|p| format!(" -> {}", p.display()))
                .unwrap_or_else(|| " (not saved: use --save-dir)".into());
            if json {
                // `size` as in the message objects: one name for a payload's length in bytes.
                outln!(
                    "{}",
                    serde_json::json!({ "type": "stream", "from": s.from, "netuid": s.netuid,
                        "id": s.id.to_hex(), "size": n, "e2e": s.e2e, "elapsed_ms": elapsed.as_millis() as u64,
                        "name": s.name, "path": path.map(|p| p.display().to_string()) })
                );
            } else {
                outln!(
                    "stream {} from {} (netuid {}): {n} bytes received and verified in {:.2} s ({}){saved}",
                    s.id,
                    s.from,
                    s.netuid,
                    elapsed.as_secs_f64(),
                    rate(n, elapsed)
                );
            }
        }
        Err(e) => {
            if let Some(p) = part {
                let _ = std::fs::remove_file(p);
            }
            eprintln!("stream {} from {} refused: {e:#}", s.id, s.from);
        }
    }
}

/// Moves the finished `part` file into `dir` as `name`, or `name-1`, `name-2`… when taken: an
/// existing file is never replaced (a hard link fails rather than overwrite, even against a
/// file created at the same moment). Returns the final path.
fn place(part: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    for n in 0..10_000u32 {
        let candidate = match n {
            0 => dir.join(name),
            _ => dir.join(hermes::proto::filename::with_suffix(name, n)),
        };
        match std::fs::hard_link(part, &candidate) {
            Ok(()) => {
                std::fs::remove_file(part)
                    .with_context(|| format!("cannot remove {}", part.display()))?;
                // The new directory entry survives a crash before the sender is told.
                if let Ok(d) = std::fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot create {}", candidate.display()))
            }
        }
    }
    bail!(
        "every name from {name} to {name}-9999 is taken in {}",
        dir.display()
    )
}

pub(crate) fn listen(config: &Path, save_dir: Option<&Path>, json: bool) -> Result<()> {
    if let Some(d) = save_dir {
        std::fs::create_dir_all(d)
            .with_context(|| format!("--save-dir: cannot create {}", d.display()))?;
    }
    let save_dir = save_dir.map(Path::to_path_buf);
    // stdout carries only what arrives; who we are and where we listen go to stderr.
    serve(config, Banner::Stderr, |rt, mut stop| async move {
        let mut inbox = rt.subscribe()?;
        let mut incoming = rt.incoming_streams()?;
        eprintln!("listening for messages and streams; Ctrl-C to stop");
        loop {
            tokio::select! {
                _ = stop.recv() => break,
                // Nobody reads our output any more (`listen | head`): stop cleanly.
                _ = crate::STDOUT_CLOSED_NOTIFY.notified() => break,
                m = inbox.recv() => match m {
                    // Acknowledged (dropped) only once written out: a line that could not be
                    // written goes back to the sender, which delivers it again later.
                    Some(m) => {
                        let ticket = save_dir
                            .as_ref()
                            .and_then(|d| hermes::sync::ticket_in_message(&m.bytes).map(|t| (d, t)));
                        match ticket {
                            // A ticket is fetched into --save-dir; the message is acknowledged
                            // once the download is recorded (it then resumes across restarts).
                            Some((dir, Ok(t))) => match start_fetch(&rt, t, dir, &m.from, json).await {
                                Ok(()) => m.ack(),
                                Err(e) => {
                                    eprintln!("ticket from {} not fetched: {e:#}", m.from);
                                    m.ack();
                                }
                            },
                            _ => {
                                if print_message(&m, json) {
                                    m.ack();
                                } else {
                                    m.give_back();
                                }
                            }
                        }
                    }
                    None => break,
                },
                s = incoming.recv() => match s {
                    Some(s) => {
                        tokio::spawn(receive_stream(s, save_dir.clone(), json));
                    }
                    None => break,
                },
            }
        }
        Ok(())
    })
}

/// Starts the download a ticket names into `dir` (under the sender's file name made safe, or
/// `<transfer id>.bin`; a taken name gets `-1`, `-2`…) and reports it when it ends.
async fn start_fetch(
    rt: &hermes::RuntimeHandle,
    t: hermes::sync::Ticket,
    dir: &Path,
    from: &str,
    json: bool,
) -> Result<()> {
    let id = t.body.transfer_id;
    let size = t.body.layout.size();
    let name = t
        .body
        .file_name
        .as_deref()
        .and_then(|n| hermes::proto::filename::sanitize(n.as_bytes()))
        .unwrap_or_else(|| format!("{id}.bin"));
    let dest = (0..10_000u32)
        .map(|n| match n {
            0 => dir.join(&name),
            _ => dir.join(hermes::proto::filename::with_suffix(&name, n)),
        })
        .find(|p| !p.exists() && !hermes::sync::partial_exists(p))
        .ok_or_else(|| anyhow!("no free name for {name} in {}", dir.display()))?;
    let transfer = rt.fetch_ticket(t, &dest).await?;
    if !json {
        eprintln!(
            "ticket from {from}: fetching transfer {id} ({size} bytes) -> {}",
            dest.display()
        );
    }
    let from = from.to_string();
    tokio::spawn(async move {
        let started = Instant::now();
        let r = transfer.wait().await;
        let elapsed = started.elapsed();
        match r {
            Ok(()) if json => outln!(
                "{}",
                serde_json::json!({ "type": "transfer", "from": from, "id": id.to_hex(),
                    "size": size, "elapsed_ms": elapsed.as_millis() as u64,
                    "path": dest.display().to_string() })
            ),
            Ok(()) => outln!(
                "transfer {id} from {from}: {size} bytes received and verified in {:.2} s ({}) -> {}",
                elapsed.as_secs_f64(),
                rate(size, elapsed),
                dest.display()
            ),
            Err(e) => eprintln!(
                "transfer {id} from {from} stopped: {e} (the partial file is kept; `hermes fetch` with the ticket resumes it)"
            ),
        }
    });
    Ok(())
}

/// The size of stdin when it is a regular file (for the progress bar's ETA).
fn stdin_len() -> Option<u64> {
    use std::os::fd::AsRawFd;
    let f = std::io::stdin();
    let path = format!("/proc/self/fd/{}", f.as_raw_fd());
    std::fs::metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
}

pub(crate) fn stream(config: &Path, to: &str, netuid: u16, file: Option<&Path>) -> Result<()> {
    let cfg = Config::load(config)?;
    check_to(to)?;
    let total = match file {
        Some(p) => Some(
            std::fs::metadata(p)
                .with_context(|| format!("--file: cannot read {}", p.display()))?
                .len(),
        ),
        None => stdin_len(),
    };
    // The recipient learns the file's name (it sanitizes it before use).
    let name = file
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    let sock = control::socket_path(&cfg.data_dir);
    let started = Instant::now();
    let bytes = block_on(async {
        let mut input: Box<dyn tokio::io::AsyncRead + Unpin> = match file {
            Some(p) => Box::new(
                tokio::fs::File::open(p)
                    .await
                    .with_context(|| format!("--file: cannot open {}", p.display()))?,
            ),
            None => Box::new(tokio::io::stdin()),
        };
        let pb = bytes_bar(total, &format!("stream to {to}"));
        if control::is_running(&sock).await {
            let answer = control::stream(&sock, to, netuid, name.as_deref(), &mut input, |n| {
                pb.set_position(n)
            })
            .await;
            pb.finish_and_clear();
            return Ok::<_, anyhow::Error>(answer?["bytes"].as_u64().unwrap_or(0));
        }
        let rt = one_off(cfg).await?;
        let result = async {
            let mut w = rt.open_stream_named(to, netuid, name.as_deref()).await?;
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            loop {
                let k = input.read(&mut buf).await.context("reading the input")?;
                if k == 0 {
                    break;
                }
                tokio::io::AsyncWriteExt::write_all(&mut w, &buf[..k]).await?;
                n += k as u64;
                pb.set_position(n);
            }
            let report = w.finish().await?;
            Ok::<_, anyhow::Error>(report.bytes)
        }
        .await;
        pb.finish_and_clear();
        rt.shutdown().await?;
        result
    })?;
    let elapsed = started.elapsed();
    // What the confirmation means is in `stream --help`.
    outln!(
        "sent {bytes} bytes to {to}, confirmed complete and authentic by the recipient, in {:.2} s ({})",
        elapsed.as_secs_f64(),
        rate(bytes, elapsed)
    );
    Ok(())
}

/// Waits for the first delivery event about `id` (used by the demo).
pub(crate) async fn delivered(
    events: &mut tokio::sync::broadcast::Receiver<DeliveryEvent>,
    id: hermes::MessageId,
    wait: Duration,
) -> bool {
    control::wait_outcome(events, id, wait).await["status"] == "delivered"
}
