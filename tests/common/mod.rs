//! Helpers shared by the integration tests: real key files and configs in temp dirs.
#![allow(dead_code, unreachable_pub, missing_docs)]

use hermes::config::{ChainKind, SubnetMode};
use hermes::{Config, HotkeyPair};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A node directory with a freshly generated Bittensor hotkey file and a config.
pub struct NodeDir {
    pub dir: tempfile::TempDir,
    pub hotkey_file: PathBuf,
    pub ss58: String,
}

impl NodeDir {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let hotkey_file = dir.path().join("wallet").join("hotkeys").join("default");
        let (key, file) = HotkeyPair::generate();
        file.write_new(&hotkey_file).expect("write hotkey");
        NodeDir {
            ss58: key.public().to_ss58(42),
            dir,
            hotkey_file,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config(&self) -> Config {
        Config::default()
            .with_data_dir(self.data_dir())
            .with_hotkey_file(&self.hotkey_file)
            .with_subnets(SubnetMode::Whitelist, vec![3, 42])
            .with_log_level("warn")
            .with_chain(ChainKind::Dev, self.dir.path().join("chain"))
            .with_listen(vec!["/ip4/127.0.0.1/tcp/0".parse().expect("addr")])
    }

    /// Writes the config as JSON and returns its path.
    pub fn write_config(&self) -> PathBuf {
        let p = self.dir.path().join("hermes.json");
        std::fs::write(&p, self.config().to_pretty_json()).expect("write config");
        p
    }
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::yield_now();
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Number of threads in this process.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Number of open file descriptors in this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}
