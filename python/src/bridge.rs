//! The asyncio bridge: Rust futures awaited from Python coroutines.
//!
//! How one call goes, step by step:
//! 1. The coroutine calls a method of the extension; on its thread (holding the GIL) the bridge
//!    takes the running loop, creates an `asyncio.Future` on it and spawns the Rust future on the
//!    extension's own executor ([`executor`]). The Python thread never waits on Rust.
//! 2. The Rust future runs on the executor's threads (the node's actors run on the runtime's own
//!    thread), without the GIL.
//! 3. When it ends, the task queues its outcome for the future's loop ([`PENDING`]). The first
//!    outcome queued for a loop takes the GIL briefly ([`with_python`]) and schedules one
//!    [`drain`] there with `loop.call_soon_threadsafe`; outcomes that end before it runs join
//!    the same batch without touching the GIL. On the loop's thread the drain converts each
//!    outcome to Python and sets it, unless the future is already done (cancelled meanwhile).
//!    A loop that has been closed refuses the call: its batch is dropped, nobody can await it.
//! 4. Cancelling the asyncio future runs its done-callback, which aborts the Rust task: its
//!    future is dropped at its next await point, and so is the Rust side of the operation.
//!
//! Interpreter exit: an `atexit` hook ([`at_exit`]) raises [`FINALIZING`] before the interpreter
//! starts tearing down, waits for tasks already taking the GIL, then shuts down the live nodes.
//! From then on no task takes the GIL (a thread that tries during finalisation is stopped by
//! CPython, which would abort the process): outcomes are dropped and borrowed Python buffers are
//! leaked instead of released.

use crate::errors::Failure;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyCFunction;
use pyo3::{intern, BoundObject};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Set once by [`at_exit`]: the interpreter is exiting and must not be entered any more.
static FINALIZING: AtomicBool = AtomicBool::new(false);
/// Threads inside (or queued for) the GIL through [`with_python`]; [`at_exit`] waits for zero.
static ATTACHING: AtomicUsize = AtomicUsize::new(0);

/// How long [`at_exit`] waits for tasks already taking the GIL. They only convert a value and
/// schedule a callback, so this is generous; past it, exit proceeds rather than hangs.
const EXIT_DRAIN: Duration = Duration::from_secs(5);

/// The executor that drives every future of the extension. Two workers: the node's own work
/// runs on the runtime's threads, these only wait and copy.
///
/// # Errors
/// A `HermesError` when the executor cannot be created (no threads left).
pub(crate) fn executor() -> Result<&'static tokio::runtime::Runtime, Failure> {
    static RT: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("hermes-py")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| Failure::startup(format!("cannot start the executor: {e}")))
}

/// Whether the interpreter is exiting (see the module header).
pub(crate) fn finalizing() -> bool {
    FINALIZING.load(Ordering::SeqCst)
}

/// Runs `f` holding the GIL, unless the interpreter is exiting: then `None`, and `f` is dropped
/// without running (so it must not own Python objects that need the GIL to drop).
pub(crate) fn with_python<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    // Counted before the check, so that `at_exit` either sees this thread or this thread sees
    // the flag: no thread enters the interpreter unseen once it is finalising.
    ATTACHING.fetch_add(1, Ordering::SeqCst);
    let out = if finalizing() {
        None
    } else {
        Some(Python::attach(f))
    };
    ATTACHING.fetch_sub(1, Ordering::SeqCst);
    out
}

/// Marks the interpreter as exiting and waits (GIL released) for tasks already entering it.
pub(crate) fn begin_exit(py: Python<'_>) {
    FINALIZING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let until = Instant::now() + EXIT_DRAIN;
        // The current thread holds no count here (it is in `atexit`, not in a task).
        while ATTACHING.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// `atexit` hook: stop entering the interpreter, then shut the live nodes down.
#[pyfunction]
pub(crate) fn at_exit(py: Python<'_>) {
    begin_exit(py);
    crate::node::shutdown_all(py);
}

/// Makes a future's outcome on the loop's thread: `(true, result)` or `(false, exception)`.
type Outcome = Box<dyn FnOnce(Python<'_>) -> (bool, Py<PyAny>) + Send>;

/// An outcome on its way to its future.
struct Completion {
    target: Py<PyAny>,
    outcome: Outcome,
}

/// Outcomes waiting for their loop, by loop (the address of the loop object, which every
/// queued future keeps alive through its own reference to its loop). The first outcome queued
/// for a loop schedules one [`drain`] there; those that follow before it runs ride along, so a
/// busy loop is woken, and the GIL taken from the executor, once per batch rather than once per
/// outcome. The lock is never held while taking the GIL or running Python code.
type Batches = Vec<(usize, Vec<Completion>)>;
static PENDING: Mutex<Batches> = Mutex::new(Vec::new());

fn pending() -> std::sync::MutexGuard<'static, Batches> {
    PENDING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Queues `c` for the loop `key`; `true` when it opened a batch, so the caller must schedule a
/// [`drain`] on that loop.
fn enqueue(key: usize, c: Completion) -> bool {
    let mut p = pending();
    if let Some((_, batch)) = p.iter_mut().find(|(k, _)| *k == key) {
        batch.push(c);
        return false;
    }
    p.push((key, vec![c]));
    true
}

/// Takes the batch queued for the loop `key` (to resolve it, or to drop it with the GIL held).
fn take_batch(key: usize) -> Vec<Completion> {
    let mut p = pending();
    match p.iter().position(|(k, _)| *k == key) {
        Some(i) => p.swap_remove(i).1,
        None => Vec::new(),
    }
}

/// Runs on a loop's thread: sets the outcome of every future queued for it, except those
/// already done (cancelled meanwhile).
#[pyfunction]
fn drain(py: Python<'_>, key: usize) -> PyResult<()> {
    for c in take_batch(key) {
        let fut = c.target.bind(py);
        if fut.call_method0(intern!(py, "done"))?.is_truthy()? {
            // Cancelled meanwhile: the outcome is dropped unconverted, so a value that must not
            // be lost unseen (an inbox message) can undo itself in its `Drop`.
            continue;
        }
        let (ok, value) = (c.outcome)(py);
        if ok {
            fut.call_method1(intern!(py, "set_result"), (value,))?;
        } else {
            fut.call_method1(intern!(py, "set_exception"), (value,))?;
        }
    }
    Ok(())
}

/// The done-callback of a bridged future: aborts the Rust task when the future was cancelled.
#[pyclass(frozen)]
struct Canceller {
    task: tokio::task::AbortHandle,
}

#[pymethods]
impl Canceller {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut
            .call_method0(intern!(fut.py(), "cancelled"))?
            .is_truthy()?
        {
            self.task.abort();
        }
        Ok(())
    }
}

/// The drain function, made once per interpreter.
fn drainer(py: Python<'_>) -> PyResult<&Py<PyCFunction>> {
    static DRAIN: PyOnceLock<Py<PyCFunction>> = PyOnceLock::new();
    DRAIN.get_or_try_init(py, || Ok(wrap_pyfunction!(drain, py)?.unbind()))
}

/// The running event loop (`asyncio.get_running_loop()`, the function looked up once).
///
/// # Errors
/// `RuntimeError` when no loop is running on this thread.
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import("asyncio")?.getattr("get_running_loop")?.unbind())
    })?
    .bind(py)
    .call0()
}

/// Runs `fut` on the executor and returns an `asyncio.Future` of the running loop that
/// resolves to its output (converted to Python), or raises its [`Failure`].
///
/// # Errors
/// `RuntimeError` when called without a running event loop.
pub(crate) fn spawn<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = Result<T, Failure>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = running_loop(py)?;
    let py_fut = event_loop.call_method0(intern!(py, "create_future"))?;
    let rt = executor().map_err(|f| f.into_pyerr(py))?;
    let drain = drainer(py)?.clone_ref(py);
    let key = event_loop.as_ptr() as usize;
    let target = py_fut.clone().unbind();
    let on_loop = event_loop.unbind();
    let task = rt.spawn(async move {
        let out = fut.await;
        let outcome = Box::new(move |py: Python<'_>| match out {
            Ok(v) => match v.into_pyobject(py) {
                Ok(b) => (true, b.into_any().into_bound().unbind()),
                Err(e) => (false, Into::<PyErr>::into(e).into_value(py).into_any()),
            },
            Err(f) => (false, f.into_pyerr(py).into_value(py).into_any()),
        });
        if !enqueue(key, Completion { target, outcome }) {
            // A drain is already scheduled on that loop and will resolve this one too. The
            // loop and drain references are released by pyo3 at its next GIL acquisition.
            drop((on_loop, drain));
            return;
        }
        // Python objects are only touched with the GIL; past `at_exit` they are leaked
        // instead (the process is ending).
        let mut held = Some((on_loop, drain));
        with_python(|py| {
            let Some((on_loop, drain)) = held.take() else {
                return;
            };
            // A closed loop raises here: nobody can await its futures any more, so the batch
            // is dropped on purpose (with the GIL, outside the lock).
            if on_loop
                .bind(py)
                .call_method1(intern!(py, "call_soon_threadsafe"), (drain, key))
                .is_err()
            {
                drop(take_batch(key));
            }
        });
        if let Some(held) = held {
            std::mem::forget(held);
        }
    });
    let cancel = Canceller {
        task: task.abort_handle(),
    };
    py_fut.call_method1(intern!(py, "add_done_callback"), (cancel,))?;
    Ok(py_fut)
}

/// Waits for `fut` on the executor from synchronous Python code, GIL released.
///
/// # Errors
/// The future's [`Failure`].
pub(crate) fn block_on<F, T>(py: Python<'_>, fut: F) -> Result<T, Failure>
where
    F: Future<Output = Result<T, Failure>> + Send,
    T: Send,
{
    let rt = executor()?;
    py.detach(|| rt.block_on(fut))
}
