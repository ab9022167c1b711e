//! Panic containment for supervised actors.
//!
//! actix restarts a supervised actor when its context stops, but a panic inside a handler unwinds
//! through the arbiter's task and kills the actor *and* its supervisor. Handlers that run logic
//! which could conceivably panic wrap it in [`contain`]: the panic is caught, logged, the request
//! gets an error, and the context is stopped so that `actix::Supervisor` calls
//! `Supervised::restarting`, where the actor reloads its state from sled. The actor's `Addr` stays
//! valid across the restart, so callers never notice beyond the one failed request.

use actix::{Actor, ActorContext};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The request failed because the actor panicked; it is being restarted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{actor} crashed while handling the request and is restarting: {message}")]
pub struct Crashed {
    /// Actor name.
    pub actor: &'static str,
    /// The panic payload, if it was a string.
    pub message: String,
}

/// Runs `f`, converting a panic into [`Crashed`] and stopping `ctx` so the supervisor restarts it.
pub fn contain<A, R>(
    actor: &'static str,
    ctx: &mut A::Context,
    f: impl FnOnce() -> R,
) -> Result<R, Crashed>
where
    A: Actor,
    A::Context: ActorContext,
{
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Ok(r),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            tracing::error!(actor, %message, "actor panicked; restarting it");
            ctx.stop();
            Err(Crashed { actor, message })
        }
    }
}
