//! Per-call ring sizes, with defaults, environment variables and per-script
//! overrides.

use std::fmt;

/// The largest `max_notes` or `max_audit_log` accepted: a million entries
/// (about 128 MB of notes for one call), far beyond any real call, low enough
/// that a typo like `10000000000` is an error rather than an allocation.
pub const MAX_LIMIT: usize = 1_000_000;

/// Environment variable for [`Limits::max_notes`].
pub const ENV_MAX_NOTES: &str = "CALLRING_MAX_NOTES";
/// Environment variable for [`Limits::max_audit_log`].
pub const ENV_MAX_AUDIT_LOG: &str = "CALLRING_MAX_AUDIT_LOG";
/// Environment variable for [`Limits::max_note_bytes`].
pub const ENV_MAX_NOTE_BYTES: &str = "CALLRING_MAX_NOTE_BYTES";
/// Environment variable for [`Limits::max_event_bytes`].
pub const ENV_MAX_EVENT_BYTES: &str = "CALLRING_MAX_EVENT_BYTES";
/// The largest `max_note_bytes` or `max_event_bytes` accepted (1 MiB).
pub const MAX_ENTRY_LIMIT: usize = 1 << 20;

/// How many notes and audit events one call keeps in memory, and how long
/// each may be.
///
/// Counts are entries, whatever their lengths: the defaults are the original
/// host's, the last 1000 notes and 500 audit events. A note may have up to
/// 4096 bytes of text and an encoded audit event up to 8192 bytes by default;
/// longer ones are refused with [`CallError::TooLarge`](super::CallError).
/// Counts are in `1..=MAX_LIMIT`, lengths in `1..=MAX_ENTRY_LIMIT`.
///
/// # Memory per call
///
/// Notes live in 128-byte slots (112 bytes inline: an 8-byte timestamp and up
/// to 104 bytes of text), events in 256-byte slots (240 bytes inline); the
/// rest of a longer entry goes to a recycled extension block (see
/// [`Ring`](crate::Ring#memory)). At the defaults a call whose rings are full
/// holds 128 KB of note slots and 128 KB of event slots, plus about 1.1 to 1.4
/// times the bytes by which its entries exceed the inline payload (measured
/// with lengths mixed 1..=2000 bytes). The worst case, reached only if every
/// slot at some time held an entry of every size class, is about 23 MB for
/// notes and 16 MB for events: `(N + 16) × (slot + 22.8 KB)` at 4 KiB notes,
/// `(N + 16) × (slot + 31 KB)` at 8 KiB events.
///
/// # Configuration
///
/// [`Limits::from_env`] reads `CALLRING_MAX_NOTES`, `CALLRING_MAX_AUDIT_LOG`,
/// `CALLRING_MAX_NOTE_BYTES` and `CALLRING_MAX_EVENT_BYTES`;
/// [`Limits::from_env_for`] also reads per-script-type overrides, named by
/// appending `__` and the script type in upper case, with every character
/// that is not an ASCII letter or digit replaced by `_`:
///
/// ```text
/// CALLRING_MAX_NOTES=1500                  # every call
/// CALLRING_MAX_NOTES__COLLECTIONS=2000     # calls of script type "collections"
/// CALLRING_MAX_AUDIT_LOG__KYC_V2=800       # script type "kyc-v2"
/// CALLRING_MAX_NOTE_BYTES=16384            # notes of up to 16 KiB of text
/// CALLRING_MAX_EVENT_BYTES__KYC_V2=65536   # bigger events for "kyc-v2"
/// ```
///
/// An override wins over the general variable, which wins over the default.
/// A variable that is set but empty, not a number, 0, or above its maximum
/// ([`MAX_LIMIT`] for counts, [`MAX_ENTRY_LIMIT`] for lengths) is an error
/// naming the variable and its value, never a silent default.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::Limits;
///
/// let vars = [("CALLRING_MAX_NOTES", "1500"), ("CALLRING_MAX_NOTES__COLLECTIONS", "2000")];
/// let limits = Limits::from_vars_for("collections", vars).expect("valid");
/// assert_eq!((limits.max_notes(), limits.max_audit_log()), (2000, 500));
///
/// let err = Limits::from_vars([("CALLRING_MAX_AUDIT_LOG", "0")]).unwrap_err();
/// assert_eq!(err.to_string(), "CALLRING_MAX_AUDIT_LOG=\"0\": must be at least 1");
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "LimitsFields")]
pub struct Limits {
    max_notes: usize,
    max_audit_log: usize,
    max_note_bytes: usize,
    max_event_bytes: usize,
}

/// Default [`Limits::max_note_bytes`].
const DEFAULT_NOTE_BYTES: usize = 4096;
/// Default [`Limits::max_event_bytes`].
const DEFAULT_EVENT_BYTES: usize = 8192;

/// `Limits` as written, validated by `TryFrom` when deserialised. The byte
/// limits may be left out (older configurations): they take the defaults.
#[derive(serde::Deserialize)]
struct LimitsFields {
    max_notes: usize,
    max_audit_log: usize,
    #[serde(default = "default_note_bytes")]
    max_note_bytes: usize,
    #[serde(default = "default_event_bytes")]
    max_event_bytes: usize,
}

fn default_note_bytes() -> usize {
    DEFAULT_NOTE_BYTES
}

fn default_event_bytes() -> usize {
    DEFAULT_EVENT_BYTES
}

impl TryFrom<LimitsFields> for Limits {
    type Error = LimitsError;

    fn try_from(f: LimitsFields) -> Result<Self, LimitsError> {
        Self::new(f.max_notes, f.max_audit_log)?
            .with_entry_bytes(f.max_note_bytes, f.max_event_bytes)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_notes: 1000,
            max_audit_log: 500,
            max_note_bytes: DEFAULT_NOTE_BYTES,
            max_event_bytes: DEFAULT_EVENT_BYTES,
        }
    }
}

/// Why a limit was rejected.
///
/// # Examples
///
/// ```
/// # #[cfg(not(loom))] {
/// use callring::call::{Limits, LimitsError};
///
/// let err = Limits::from_vars([("CALLRING_MAX_NOTES", "lots")]).unwrap_err();
/// assert_eq!(
///     err,
///     LimitsError::NotANumber { var: "CALLRING_MAX_NOTES".into(), value: "lots".into() }
/// );
/// assert_eq!(err.to_string(), "CALLRING_MAX_NOTES=\"lots\": not a whole number");
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitsError {
    /// The variable is set to the empty string.
    Empty {
        /// The variable (or the field's name for [`Limits::new`] and
        /// [`Limits::with_entry_bytes`]).
        var: String,
    },
    /// The value is not a base-10 unsigned integer.
    NotANumber {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// The value is 0.
    Zero {
        /// The variable.
        var: String,
    },
    /// The value is above [`MAX_LIMIT`] (a count) or [`MAX_ENTRY_LIMIT`] (a
    /// length).
    TooLarge {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// The largest accepted value.
        max: usize,
    },
    /// The variable's value is not valid Unicode.
    NotUnicode {
        /// The variable.
        var: String,
    },
}

impl fmt::Display for LimitsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty { var } => write!(f, "{var} is set but empty"),
            Self::NotANumber { var, value } => {
                write!(f, "{var}={value:?}: not a whole number")
            }
            Self::Zero { var } => write!(f, "{var}=\"0\": must be at least 1"),
            Self::TooLarge { var, value, max } => {
                write!(f, "{var}={value:?}: above the maximum of {max}")
            }
            Self::NotUnicode { var } => write!(f, "{var} is not valid Unicode"),
        }
    }
}

impl std::error::Error for LimitsError {}

impl Limits {
    /// Limits with the given counts and the default lengths.
    ///
    /// # Errors
    ///
    /// [`LimitsError::Zero`] or [`LimitsError::TooLarge`], naming the field.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{Limits, LimitsError};
    ///
    /// let limits = Limits::new(2000, 800).expect("in range");
    /// assert_eq!(limits.max_notes(), 2000);
    /// assert!(matches!(Limits::new(0, 800), Err(LimitsError::Zero { .. })));
    /// # }
    /// ```
    pub fn new(max_notes: usize, max_audit_log: usize) -> Result<Self, LimitsError> {
        Ok(Self {
            max_notes: check_number("max_notes", max_notes, MAX_LIMIT)?,
            max_audit_log: check_number("max_audit_log", max_audit_log, MAX_LIMIT)?,
            ..Self::default()
        })
    }

    /// These limits with the longest note text and the longest encoded audit
    /// event set, in bytes.
    ///
    /// # Errors
    ///
    /// [`LimitsError::Zero`] or [`LimitsError::TooLarge`] (above
    /// [`MAX_ENTRY_LIMIT`]), naming the field.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// use callring::call::{CallError, CallState, Limits};
    ///
    /// let limits = Limits::new(1000, 500)
    ///     .and_then(|l| l.with_entry_bytes(16 * 1024, 8192))
    ///     .expect("in range");
    /// let call = CallState::new("call-9", limits);
    /// call.append_note(&"x".repeat(10_000)).expect("a long note fits");
    /// let err = call.append_note(&"x".repeat(20_000)).unwrap_err();
    /// assert!(matches!(err, CallError::TooLarge { max: 16384, .. }));
    /// # }
    /// ```
    pub fn with_entry_bytes(
        self,
        max_note_bytes: usize,
        max_event_bytes: usize,
    ) -> Result<Self, LimitsError> {
        Ok(Self {
            max_note_bytes: check_number("max_note_bytes", max_note_bytes, MAX_ENTRY_LIMIT)?,
            max_event_bytes: check_number("max_event_bytes", max_event_bytes, MAX_ENTRY_LIMIT)?,
            ..self
        })
    }

    /// Longest note text accepted, in bytes (default 4096).
    #[must_use]
    pub fn max_note_bytes(&self) -> usize {
        self.max_note_bytes
    }

    /// Longest encoded audit event accepted, in bytes (default 8192).
    #[must_use]
    pub fn max_event_bytes(&self) -> usize {
        self.max_event_bytes
    }

    /// Notes kept per call (default 1000).
    #[must_use]
    pub fn max_notes(&self) -> usize {
        self.max_notes
    }

    /// Audit events kept in memory per call (default 500); older ones go to
    /// the audit sink.
    #[must_use]
    pub fn max_audit_log(&self) -> usize {
        self.max_audit_log
    }

    /// Defaults, overridden by `CALLRING_MAX_NOTES`, `CALLRING_MAX_AUDIT_LOG`,
    /// `CALLRING_MAX_NOTE_BYTES` and `CALLRING_MAX_EVENT_BYTES`.
    ///
    /// # Errors
    ///
    /// A [`LimitsError`] naming the first bad variable and its value.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[cfg(not(loom))] {
    /// // With neither variable set, the defaults.
    /// let limits = callring::call::Limits::from_env().expect("valid environment");
    /// assert!(limits.max_notes() >= 1);
    /// # }
    /// ```
    pub fn from_env() -> Result<Self, LimitsError> {
        Self::resolve(None, env_lookup)
    }

    /// [`from_env`](Limits::from_env) plus the overrides for `script_type`
    /// (see the type's docs for the variable names).
    ///
    /// # Errors
    ///
    /// A [`LimitsError`] naming the first bad variable and its value.
    pub fn from_env_for(script_type: &str) -> Result<Self, LimitsError> {
        Self::resolve(Some(script_type), env_lookup)
    }

    /// Like [`from_env`](Limits::from_env), reading from `vars` instead of the
    /// process environment (for tests and configuration files).
    ///
    /// # Errors
    ///
    /// A [`LimitsError`] naming the first bad variable and its value.
    pub fn from_vars<K, V>(vars: impl IntoIterator<Item = (K, V)>) -> Result<Self, LimitsError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars = collect(vars);
        Self::resolve(None, |name| lookup(&vars, name))
    }

    /// Like [`from_env_for`](Limits::from_env_for), reading from `vars`.
    ///
    /// # Errors
    ///
    /// A [`LimitsError`] naming the first bad variable and its value.
    pub fn from_vars_for<K, V>(
        script_type: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, LimitsError>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let vars = collect(vars);
        Self::resolve(Some(script_type), |name| lookup(&vars, name))
    }

    /// The override variable for `base` and `script_type`, e.g.
    /// `CALLRING_MAX_NOTES__COLLECTIONS`.
    #[must_use]
    pub fn override_var(base: &str, script_type: &str) -> String {
        let suffix: String = script_type
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{base}__{suffix}")
    }

    fn resolve(
        script_type: Option<&str>,
        get: impl Fn(&str) -> Result<Option<String>, LimitsError>,
    ) -> Result<Self, LimitsError> {
        let mut limits = Self::default();
        for (base, field, max) in [
            (ENV_MAX_NOTES, &mut limits.max_notes, MAX_LIMIT),
            (ENV_MAX_AUDIT_LOG, &mut limits.max_audit_log, MAX_LIMIT),
            (
                ENV_MAX_NOTE_BYTES,
                &mut limits.max_note_bytes,
                MAX_ENTRY_LIMIT,
            ),
            (
                ENV_MAX_EVENT_BYTES,
                &mut limits.max_event_bytes,
                MAX_ENTRY_LIMIT,
            ),
        ] {
            let mut names = vec![base.to_owned()];
            if let Some(script) = script_type {
                names.push(Self::override_var(base, script));
            }
            // Check every variable that is set, so a bad general value is
            // reported even when an override would win.
            for name in names {
                if let Some(value) = get(&name)? {
                    *field = parse(&name, &value, max)?;
                }
            }
        }
        Ok(limits)
    }
}

fn env_lookup(name: &str) -> Result<Option<String>, LimitsError> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(LimitsError::NotUnicode {
            var: name.to_owned(),
        }),
    }
}

fn collect<K: AsRef<str>, V: AsRef<str>>(
    vars: impl IntoIterator<Item = (K, V)>,
) -> Vec<(String, String)> {
    vars.into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect()
}

fn lookup(vars: &[(String, String)], name: &str) -> Result<Option<String>, LimitsError> {
    // The last setting wins, as in a shell.
    Ok(vars
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone()))
}

fn parse(var: &str, value: &str, max: usize) -> Result<usize, LimitsError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(LimitsError::Empty {
            var: var.to_owned(),
        });
    }
    if !trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LimitsError::NotANumber {
            var: var.to_owned(),
            value: value.to_owned(),
        });
    }
    match trimmed.parse::<usize>() {
        Ok(n) => check_number(var, n, max).map_err(|e| match e {
            LimitsError::TooLarge { var, max, .. } => LimitsError::TooLarge {
                var,
                value: value.to_owned(),
                max,
            },
            other => other,
        }),
        // All digits but does not fit a usize: too large.
        Err(_) => Err(LimitsError::TooLarge {
            var: var.to_owned(),
            value: value.to_owned(),
            max,
        }),
    }
}

fn check_number(var: &str, n: usize, max: usize) -> Result<usize, LimitsError> {
    if n == 0 {
        Err(LimitsError::Zero {
            var: var.to_owned(),
        })
    } else if n > max {
        Err(LimitsError::TooLarge {
            var: var.to_owned(),
            value: n.to_string(),
            max,
        })
    } else {
        Ok(n)
    }
}
