//! The exception hierarchy and the mapping of `hermes::Error` onto it.
//!
//! Errors cross threads as [`Failure`] (plain Rust data) and become Python exceptions only
//! where the GIL is held. Every exception's text is the Rust error's `Display` text, unchanged.
//!
//! ```text
//! HermesError
//! ├── ConfigError        (.field: the config field, e.g. "network.listen_addrs[0]")
//! ├── InvalidArgument    (also a ValueError)
//! ├── NetworkError
//! ├── NotFoundError
//! ├── StreamError
//! ├── IdentityError
//! ├── StorageError
//! ├── SyncError
//! └── StoppedError
//! ```

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

create_exception!(
    _native,
    HermesError,
    PyException,
    "Base class of every Hermes error; the text is the runtime's."
);
create_exception!(
    _native,
    ConfigError,
    HermesError,
    "The configuration is invalid; nothing was started. `field` names the bad field (None when the file itself is unreadable or not JSON)."
);

/// `InvalidArgument(HermesError, ValueError)`, made at import (two bases), so that
/// `except ValueError` catches bad arguments as Python code expects.
static INVALID_ARGUMENT: PyOnceLock<Py<PyType>> = PyOnceLock::new();

fn invalid_argument(py: Python<'_>) -> PyResult<&Py<PyType>> {
    INVALID_ARGUMENT.get_or_try_init(py, || {
        let bases = (py.get_type::<HermesError>(), py.get_type::<PyValueError>());
        let ns = PyDict::new(py);
        ns.set_item("__module__", "hermes_p2p")?;
        ns.set_item(
            "__doc__",
            "An argument was invalid (e.g. a malformed SS58 address); also a ValueError.",
        )?;
        let cls = py
            .get_type::<PyType>()
            .call1(("InvalidArgument", bases, ns))?
            .cast_into::<PyType>()?;
        Ok(cls.unbind())
    })
}
create_exception!(
    _native,
    NetworkError,
    HermesError,
    "A network operation failed."
);
create_exception!(
    _native,
    NotFoundError,
    HermesError,
    "A lookup found nothing valid."
);
create_exception!(
    _native,
    StreamError,
    HermesError,
    "A message or stream operation failed (too large, unreachable, refused, broken)."
);
create_exception!(
    _native,
    IdentityError,
    HermesError,
    "Keys could not be loaded, or a record failed verification."
);
create_exception!(
    _native,
    StorageError,
    HermesError,
    "The database could not be opened or written (or another runtime holds the data dir)."
);
create_exception!(
    _native,
    SyncError,
    HermesError,
    "A Sync Engine operation failed."
);
create_exception!(
    _native,
    StoppedError,
    HermesError,
    "The node has been shut down."
);

/// Which exception a [`Failure`] becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Base,
    Config,
    Invalid,
    Network,
    NotFound,
    Stream,
    Identity,
    Storage,
    Sync,
    Stopped,
}

/// An error on its way to Python: the exception class, the Rust text, and the config field.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    kind: Kind,
    message: String,
    field: Option<String>,
}

impl Failure {
    /// The Rust text.
    #[cfg(test)]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            field: None,
        }
    }

    /// A failure to start (the executor or the runtime thread).
    pub(crate) fn startup(message: impl Into<String>) -> Self {
        Failure::new(Kind::Base, message)
    }

    /// A bad argument.
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Failure::new(Kind::Invalid, message)
    }

    /// A stream failure, with the text `hermes::StreamError` gives it.
    pub(crate) fn stream(e: hermes::StreamError) -> Self {
        Failure::new(Kind::Stream, e.to_string())
    }

    /// The Python exception. Every instance carries `field` (None unless a config field).
    pub(crate) fn into_pyerr(self, py: Python<'_>) -> PyErr {
        let err = match self.kind {
            Kind::Base => HermesError::new_err(self.message),
            Kind::Config => ConfigError::new_err(self.message),
            Kind::Invalid => match invalid_argument(py) {
                Ok(cls) => PyErr::from_type(cls.bind(py).clone(), self.message),
                Err(e) => e,
            },
            Kind::Network => NetworkError::new_err(self.message),
            Kind::NotFound => NotFoundError::new_err(self.message),
            Kind::Stream => StreamError::new_err(self.message),
            Kind::Identity => IdentityError::new_err(self.message),
            Kind::Storage => StorageError::new_err(self.message),
            Kind::Sync => SyncError::new_err(self.message),
            Kind::Stopped => StoppedError::new_err(self.message),
        };
        // Best effort: an attribute that cannot be set leaves the exception as it is.
        let _ = err.value(py).setattr("field", self.field);
        err
    }
}

impl From<hermes::Error> for Failure {
    fn from(e: hermes::Error) -> Self {
        use hermes::Error as E;
        let kind = match &e {
            E::Config(c) => {
                let mut f = Failure::new(Kind::Config, c.to_string());
                f.field = c.field().map(str::to_string);
                return f;
            }
            E::DataDirInUse(_) | E::Storage(_) => Kind::Storage,
            E::Identity(_) | E::Key(_) => Kind::Identity,
            E::Network(_) => Kind::Network,
            E::NotFound(_) => Kind::NotFound,
            E::Invalid(_) => Kind::Invalid,
            E::Stream(_) => Kind::Stream,
            E::Sync(_) => Kind::Sync,
            E::Stopped => Kind::Stopped,
            _ => Kind::Base,
        };
        Failure::new(kind, e.to_string())
    }
}

impl From<hermes::ConfigError> for Failure {
    fn from(e: hermes::ConfigError) -> Self {
        hermes::Error::Config(e).into()
    }
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("HermesError", py.get_type::<HermesError>())?;
    m.add("ConfigError", py.get_type::<ConfigError>())?;
    m.add("InvalidArgument", invalid_argument(py)?.bind(py))?;
    m.add("NetworkError", py.get_type::<NetworkError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("StreamError", py.get_type::<StreamError>())?;
    m.add("IdentityError", py.get_type::<IdentityError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("SyncError", py.get_type::<SyncError>())?;
    m.add("StoppedError", py.get_type::<StoppedError>())?;
    Ok(())
}
