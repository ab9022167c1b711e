//! Panic containment for supervised actors.
//!
//! actix restarts a supervised actor when its context stops, but a panic inside a handler unwinds
//! through the arbiter's task and kills the actor *and* its supervisor. Handlers that run logic
//! which could conceivably panic wrap it in [`contain`]: the panic is caught, logged, the request
//! gets an error, and the context is stopped so that `actix::Supervisor` calls
//! `Supervised::restarting`, where the actor reloads its state from sled. The actor's `Addr` stays
//! valid across the restart, so callers never notice beyond the one failed request. Tasks spawned
//! into an actor's context run inside its poll too: they are wrapped in `catch_unwind` and end
//! through [`task_ended`], which restarts the actor the same way.

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

fn crashed<A>(
    actor: &'static str,
    ctx: &mut A::Context,
    payload: Box<dyn std::any::Any + Send>,
) -> Crashed
where
    A: Actor,
    A::Context: ActorContext,
{
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into());
    tracing::error!(actor, %message, "actor panicked; restarting it");
    ctx.stop();
    Crashed { actor, message }
}

/// Like [`contain`], for handlers whose logic needs the context too (to spawn tasks, to know
/// its own address): `f` gets both the actor and its context.
pub fn contain_with<A, R>(
    actor: &'static str,
    act: &mut A,
    ctx: &mut A::Context,
    f: impl FnOnce(&mut A, &mut A::Context) -> R,
) -> Result<R, Crashed>
where
    A: Actor,
    A::Context: ActorContext,
{
    match catch_unwind(AssertUnwindSafe(|| f(act, ctx))) {
        Ok(r) => Ok(r),
        Err(payload) => Err(crashed::<A>(actor, ctx, payload)),
    }
}

/// Stops `ctx` (so the supervisor restarts the actor) when a task spawned into it panicked:
/// `result` is what `futures::FutureExt::catch_unwind` made of the task.
pub fn task_ended<A, T>(
    actor: &'static str,
    ctx: &mut A::Context,
    result: Result<T, Box<dyn std::any::Any + Send>>,
) where
    A: Actor,
    A::Context: ActorContext,
{
    if let Err(payload) = result {
        let _ = crashed::<A>(actor, ctx, payload);
    }
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
        Err(payload) => Err(crashed::<A>(actor, ctx, payload)),
    }
}
