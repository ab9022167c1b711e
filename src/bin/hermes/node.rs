//! `hermes run`, `peers` and `stats`: a running node and its control socket.

use crate::block_on;
use crate::demo::within;
use anyhow::Result;
use hermes::{Config, Runtime};
use std::path::Path;

pub(crate) fn run_node(config: &Path) -> Result<()> {
    serve(config, |_| async {
        println!("running; Ctrl-C to stop");
        wait_for_signal().await;
        Ok(())
    })
}

/// Starts the node of `config`, prints who it is and where it listens, serves the control
/// socket, runs `body` to completion and shuts the node down cleanly.
pub(crate) fn serve<F, Fut>(config: &Path, body: F) -> Result<()>
where
    F: FnOnce(hermes::RuntimeHandle) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let cfg = Config::load(config)?;
    let data_dir = cfg.data_dir.clone();
    block_on(async {
        let rt = Runtime::builder(cfg).start().await?;
        let me = rt.identity().await?;
        println!("ss58:    {}", me.ss58);
        println!("peer_id: {}", me.peer_id);
        // Listen addresses appear as the transports bind; wait for the first.
        let addrs = within(2, || async {
            let a = rt.listen_addrs().await.ok()?;
            (!a.is_empty()).then_some(a)
        })
        .await
        .unwrap_or_default();
        for a in &addrs {
            println!("listen:  {a}/p2p/{}", me.peer_id);
        }
        let sock = hermes::control::socket_path(&data_dir);
        let server = tokio::spawn(hermes::control::serve(rt.clone(), sock.clone()));
        println!(
            "control: {} (try `hermes peers --config ...`)",
            sock.display()
        );
        let result = body(rt.clone()).await;
        eprintln!("shutting down");
        server.abort();
        let _ = std::fs::remove_file(&sock);
        rt.shutdown().await?;
        result
    })
}

pub(crate) async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub(crate) fn peers(config: &Path, json: bool) -> Result<()> {
    let cfg = Config::load(config)?;
    let path = hermes::control::socket_path(&cfg.data_dir);
    let v = block_on(hermes::control::request(&path, "peers"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let peers = v["peers"].as_array().cloned().unwrap_or_default();
    if peers.is_empty() {
        println!("no verified peers");
    }
    for p in peers {
        println!(
            "{}  {}  netuids {}  {}",
            p["ss58"].as_str().unwrap_or("?"),
            p["peer_id"].as_str().unwrap_or("?"),
            p["netuids"],
            p["addresses"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(" "))
                .unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) fn stats(config: &Path) -> Result<()> {
    let cfg = Config::load(config)?;
    let path = hermes::control::socket_path(&cfg.data_dir);
    let v = block_on(hermes::control::request(&path, "stats"))?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
