//! `callring._callring`: the Python binding of callring's call layer.
//!
//! The Python package `callring` (in `python/python/callring/`) wraps these
//! classes with the original host's names and keyword arguments; this module
//! does the work. Every method takes `&self` on a frozen class around
//! `Arc`-shared, `Sync` Rust state, so it is safe without the GIL, and the
//! module says so (`gil_used = false`). Everything that can wait (archive
//! back-pressure, `end`, `flush`, `stop`, durable waits, reads of large rings)
//! runs with the thread detached from the interpreter.
//!
//! Values cross the boundary as plain types or as JSON text (details,
//! summaries, metrics), which the Python side turns into dicts with `json`.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use callring::archive::{self, ArchiveConfig, ArchiveError, ArchiveSink, Archiver};
use callring::call::{
    AuditEventType, CallError, CallState, Details, EndOutcome, Limits, LimitsError,
};
use callring::host::{CallRegistry, RegistryError};
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyString;

create_exception!(
    _callring,
    CallEnded,
    PyRuntimeError,
    "The call has ended: nothing more can be appended or logged."
);
create_exception!(
    _callring,
    NotArchived,
    PyRuntimeError,
    "The event was logged in memory but the archive refused it (stopped); \
     take it back with CallState.take_refused_audit()."
);
create_exception!(
    _callring,
    ArchiveFailure,
    PyOSError,
    "The audit archive could not start, flush, stop or make an event durable."
);

fn call_error(e: CallError) -> PyErr {
    match e {
        CallError::Ended { .. } => CallEnded::new_err(e.to_string()),
        CallError::NotArchived { .. } => NotArchived::new_err(e.to_string()),
        CallError::NotDurable { .. } | CallError::NoArchive { .. } => {
            ArchiveFailure::new_err(e.to_string())
        }
        _ => PyValueError::new_err(e.to_string()),
    }
}

fn limits_error(e: LimitsError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn archive_error(e: ArchiveError) -> PyErr {
    ArchiveFailure::new_err(e.to_string())
}

fn json<T: serde::Serialize>(value: &T) -> PyResult<String> {
    serde_json::to_string(value).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// An event type from its name: one of the named types (`"consent_given"`),
/// or any other name as a custom type.
fn event_type(name: &str) -> AuditEventType {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .unwrap_or_else(|_| AuditEventType::Other(name.to_owned()))
}

/// The name an event type serialises to (`"consent_given"`, or the custom
/// name).
fn event_type_name(kind: &AuditEventType) -> String {
    match kind {
        AuditEventType::Other(name) => name.clone(),
        named => serde_json::to_value(named)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| named.to_string()),
    }
}

/// Audit events as the original's dicts, as JSON text: `seq`, `timestamp`
/// (RFC 3339), `event_type`, `agent_id`, `details`.
fn events_json(events: &[callring::call::AuditEvent]) -> PyResult<String> {
    let list: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "seq": e.seq,
                "timestamp": e.at.to_rfc3339(),
                "event_type": event_type_name(&e.kind),
                "agent_id": e.agent_id,
                "details": e.details,
            })
        })
        .collect();
    json(&list)
}

/// Limits from numbers or the environment.
#[pyclass(frozen, module = "callring._callring", name = "Limits")]
#[derive(Debug, Clone, Copy)]
struct PyLimits(Limits);

#[pymethods]
impl PyLimits {
    #[new]
    #[pyo3(signature = (max_notes = 1000, max_audit_log = 500))]
    fn new(max_notes: usize, max_audit_log: usize) -> PyResult<Self> {
        Limits::new(max_notes, max_audit_log)
            .map(Self)
            .map_err(limits_error)
    }

    /// Reads `CALLRING_MAX_NOTES` / `CALLRING_MAX_AUDIT_LOG`, and with a
    /// script type its overrides (`CALLRING_MAX_NOTES__COLLECTIONS`).
    #[staticmethod]
    #[pyo3(signature = (script = None))]
    fn from_env(script: Option<&str>) -> PyResult<Self> {
        match script {
            Some(s) => Limits::from_env_for(s),
            None => Limits::from_env(),
        }
        .map(Self)
        .map_err(limits_error)
    }

    #[getter]
    fn max_notes(&self) -> usize {
        self.0.max_notes()
    }

    #[getter]
    fn max_audit_log(&self) -> usize {
        self.0.max_audit_log()
    }

    fn __repr__(&self) -> String {
        format!(
            "Limits(max_notes={}, max_audit_log={})",
            self.0.max_notes(),
            self.0.max_audit_log()
        )
    }
}

/// The durable JSON Lines audit archive.
#[pyclass(frozen, module = "callring._callring", name = "Archiver")]
struct PyArchiver {
    /// `None` once stopped.
    inner: Mutex<Option<Archiver>>,
    /// Makes the sinks of new calls: still valid (refusing) after a stop.
    template: ArchiveSink,
    dir: String,
}

impl PyArchiver {
    fn sink(&self, call_id: &str) -> ArchiveSink {
        self.template.for_call(call_id)
    }

    fn with<T>(&self, f: impl FnOnce(&Archiver) -> T) -> PyResult<T> {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match inner.as_ref() {
            Some(archiver) => Ok(f(archiver)),
            None => Err(ArchiveFailure::new_err(format!(
                "the archiver of {} is stopped",
                self.dir
            ))),
        }
    }
}

#[pymethods]
impl PyArchiver {
    #[new]
    #[pyo3(signature = (dir, fsync_interval_ms = None))]
    fn new(py: Python<'_>, dir: String, fsync_interval_ms: Option<u64>) -> PyResult<Self> {
        let mut config = ArchiveConfig::default();
        if let Some(ms) = fsync_interval_ms {
            config = config.fsync_interval(Duration::from_millis(ms));
        }
        let archiver = py
            .detach(|| Archiver::start(&dir, config))
            .map_err(archive_error)?;
        Ok(Self {
            template: archiver.sink(""),
            inner: Mutex::new(Some(archiver)),
            dir,
        })
    }

    /// Waits until everything handed over so far is durable.
    #[pyo3(signature = (timeout = None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        // The lock only guards against a concurrent stop; flushes from
        // several threads take turns, each waiting on the archiver's thread.
        py.detach(|| {
            self.with(|archiver| match timeout {
                Some(secs) => archiver.flush_timeout(Duration::from_secs_f64(secs.max(0.0))),
                None => archiver.flush(),
            })
        })?
        .map_err(archive_error)
    }

    /// `(handed_over, durable)`: records handed over, and how many of the
    /// first of them are durable.
    fn durability(&self) -> PyResult<(u64, u64)> {
        let d = self.with(Archiver::durability)?;
        Ok((d.handed_over, d.durable))
    }

    /// Stops the archiver (end the calls first) and returns its counters as
    /// JSON text.
    fn stop(&self, py: Python<'_>) -> PyResult<String> {
        let taken = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(archiver) = taken else {
            return Err(ArchiveFailure::new_err("the archiver is already stopped"));
        };
        let stats = py.detach(|| archiver.stop()).map_err(archive_error)?;
        json(&stats)
    }

    #[getter]
    fn dir(&self) -> &str {
        &self.dir
    }
}

/// Verifies an archive directory; the report as JSON text.
#[pyfunction]
fn verify(py: Python<'_>, dir: String) -> PyResult<String> {
    let report = py
        .detach(|| archive::verify(&dir))
        .map_err(|e| ArchiveFailure::new_err(e.to_string()))?;
    json(&report)
}

/// One live call.
#[pyclass(frozen, module = "callring._callring", name = "CallState")]
struct PyCallState {
    call: Arc<CallState>,
    /// The last notes text handed to Python, and the Rust rendering it was
    /// made from: while `all_notes_shared` returns that same `Arc` (nothing
    /// appended since), the same Python string is returned.
    notes: Mutex<Option<(Arc<str>, Py<PyString>)>>,
}

impl PyCallState {
    fn wrap(call: Arc<CallState>) -> Self {
        Self {
            call,
            notes: Mutex::new(None),
        }
    }
}

fn outcome_json(outcome: EndOutcome) -> PyResult<String> {
    let value = match outcome {
        EndOutcome::Ended {
            notes_drained,
            audit_drained,
            audit_refused,
            closed_record,
        } => serde_json::json!({
            "ended": true,
            "notes_drained": notes_drained,
            "audit_drained": audit_drained,
            "audit_refused": audit_refused,
            "closed_record": closed_record,
        }),
        _ => serde_json::json!({"ended": false}),
    };
    json(&value)
}

#[pymethods]
impl PyCallState {
    #[new]
    #[pyo3(signature = (call_id, limits, archive = None))]
    fn new(call_id: String, limits: &PyLimits, archive: Option<&PyArchiver>) -> PyResult<Self> {
        let mut builder = CallState::builder(call_id.as_str()).limits(limits.0);
        if let Some(archive) = archive {
            builder = builder.audit_archive(archive.sink(&call_id));
        }
        Ok(Self::wrap(Arc::new(builder.build())))
    }

    #[getter]
    fn call_id(&self) -> &str {
        self.call.call_id()
    }

    #[getter]
    fn is_ended(&self) -> bool {
        self.call.is_ended()
    }

    /// Appends a note; returns its seq.
    fn append_call_notes(&self, note: &Bound<'_, PyAny>) -> PyResult<u64> {
        let Ok(text) = note.cast::<PyString>() else {
            return Err(PyTypeError::new_err(format!(
                "note must be str, not {}",
                note.get_type().name()?
            )));
        };
        let text = text.to_cow()?;
        self.call.append_note(&text).map_err(call_error)
    }

    /// All notes, oldest first, as `[%Y-%m-%d %H:%M:%S] text` lines.
    fn get_all_notes(&self, py: Python<'_>) -> Py<PyString> {
        let call = &self.call;
        let text = py.detach(|| call.all_notes_shared());
        let mut cached = self
            .notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((rendered, string)) = cached.as_ref() {
            if Arc::ptr_eq(rendered, &text) {
                return string.clone_ref(py);
            }
        }
        let string = PyString::new(py, &text).unbind();
        *cached = Some((text, string.clone_ref(py)));
        string
    }

    /// Logs an event (details as JSON text); returns its seq. With
    /// `durable`, waits until it is on disk.
    #[pyo3(signature = (event_type, agent_id, details_json, durable = false))]
    fn log_event(
        &self,
        py: Python<'_>,
        event_type: &str,
        agent_id: Option<&str>,
        details_json: &str,
        durable: bool,
    ) -> PyResult<u64> {
        let details: Details = serde_json::from_str(details_json)
            .map_err(|e| PyValueError::new_err(format!("details: {e}")))?;
        let kind = self::event_type(event_type);
        let call = &self.call;
        py.detach(|| {
            if durable {
                call.log_event_durable(&kind, agent_id, &details)
            } else {
                call.log_event(&kind, agent_id, &details)
            }
        })
        .map_err(call_error)
    }

    /// The retained audit events, in seq order, as JSON text.
    fn audit_events(&self, py: Python<'_>) -> PyResult<String> {
        let call = &self.call;
        let events = py.detach(|| call.audit_events());
        events_json(&events)
    }

    /// Audit events the archive refused (taken), as JSON text.
    fn take_refused_audit(&self) -> PyResult<String> {
        events_json(&self.call.take_refused_audit())
    }

    /// The summary as YAML text.
    fn summarize(&self, py: Python<'_>) -> PyResult<String> {
        let call = &self.call;
        py.detach(|| call.summarize().to_yaml())
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The summary as JSON text.
    fn summary_json(&self, py: Python<'_>) -> PyResult<String> {
        let call = &self.call;
        py.detach(|| call.summarize().to_json())
            .map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The counters as JSON text.
    fn metrics(&self) -> PyResult<String> {
        json(&self.call.metrics())
    }

    /// Ends the call; the outcome as JSON text.
    fn end(&self, py: Python<'_>) -> PyResult<String> {
        let call = &self.call;
        let outcome = py.detach(|| call.end());
        outcome_json(outcome)
    }
}

/// The live calls of a host.
#[pyclass(frozen, module = "callring._callring", name = "CallRegistry")]
struct PyCallRegistry(CallRegistry);

#[pymethods]
impl PyCallRegistry {
    #[new]
    #[pyo3(signature = (limits = None, archive = None))]
    fn new(limits: Option<&PyLimits>, archive: Option<&PyArchiver>) -> PyResult<Self> {
        let mut builder = CallRegistry::builder();
        if let Some(limits) = limits {
            let limits = limits.0;
            builder = builder.limits(move |_| Ok(limits));
        }
        if let Some(archive) = archive {
            let template = archive.template.clone();
            builder = builder.audit_archive(move |id| template.for_call(id));
        }
        Ok(Self(builder.build()))
    }

    #[pyo3(signature = (call_id, script_type = "default"))]
    fn start(&self, call_id: &str, script_type: &str) -> PyResult<PyCallState> {
        self.0
            .start(call_id, script_type)
            .map(PyCallState::wrap)
            .map_err(registry_error)
    }

    fn get(&self, call_id: &str) -> Option<PyCallState> {
        self.0.get(call_id).map(PyCallState::wrap)
    }

    /// Ends a call: `(summary JSON, outcome JSON, refused events JSON)`.
    fn end(&self, py: Python<'_>, call_id: &str) -> PyResult<(String, String, String)> {
        let registry = &self.0;
        let ended = py
            .detach(|| registry.end(call_id))
            .map_err(registry_error)?;
        Ok((
            ended
                .summary
                .to_json()
                .map_err(|e| PyValueError::new_err(e.to_string()))?,
            outcome_json(ended.outcome)?,
            events_json(&ended.refused_audit)?,
        ))
    }

    fn live(&self) -> Vec<String> {
        self.0.live()
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }
}

fn registry_error(e: RegistryError) -> PyErr {
    match e {
        RegistryError::Limits(e) => limits_error(e),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// The compiled part of the `callring` package.
#[pymodule(gil_used = false)]
fn _callring(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLimits>()?;
    m.add_class::<PyArchiver>()?;
    m.add_class::<PyCallState>()?;
    m.add_class::<PyCallRegistry>()?;
    m.add_function(wrap_pyfunction!(verify, m)?)?;
    m.add("CallEnded", m.py().get_type::<CallEnded>())?;
    m.add("NotArchived", m.py().get_type::<NotArchived>())?;
    m.add("ArchiveFailure", m.py().get_type::<ArchiveFailure>())?;
    Ok(())
}
