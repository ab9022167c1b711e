//! [`StaticChain`]: a read-only registry from a JSON snapshot file.

use super::{parse_snapshot, Chain, ChainError};
use futures::future::BoxFuture;
use hermes_proto::chain::Registry;
use std::path::PathBuf;

/// A read-only registry loaded from a JSON snapshot file (re-read on every refresh, so editing
/// the file updates a running node).
#[derive(Debug, Clone)]
pub struct StaticChain {
    path: PathBuf,
}

impl StaticChain {
    /// A backend reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StaticChain { path: path.into() }
    }
}

impl Chain for StaticChain {
    fn registry(&self) -> BoxFuture<'_, Result<Registry, ChainError>> {
        Box::pin(async move {
            let text = std::fs::read_to_string(&self.path).map_err(|e| ChainError::Storage {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
            parse_snapshot(&text, &self.path)
        })
    }
}
