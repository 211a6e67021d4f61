//! `Limits`: defaults, variables, per-script overrides, and every error; and
//! that the counts are entries: a call keeps its newest `max_notes` notes
//! whatever their lengths.
#![cfg(all(not(loom), feature = "call"))]

use callring::call::{
    AuditEventType, CallError, CallState, Details, Limits, LimitsError, Timestamp,
    ENV_MAX_AUDIT_LOG, ENV_MAX_EVENT_BYTES, ENV_MAX_NOTES, ENV_MAX_NOTE_BYTES, MAX_ENTRY_LIMIT,
    MAX_LIMIT,
};

fn err(vars: &[(&str, &str)]) -> LimitsError {
    Limits::from_vars(vars.iter().copied()).unwrap_err()
}

#[test]
fn defaults_are_the_originals() {
    let l = Limits::default();
    assert_eq!((l.max_notes(), l.max_audit_log()), (1000, 500));
    assert_eq!((l.max_note_bytes(), l.max_event_bytes()), (4096, 8192));
    let none: [(&str, &str); 0] = [];
    assert_eq!(Limits::from_vars(none), Ok(l));
}

#[test]
fn variables_and_overrides() {
    let vars = [
        (ENV_MAX_NOTES, "1500"),
        (ENV_MAX_AUDIT_LOG, " 700 "), // surrounding blanks are tolerated
        ("CALLRING_MAX_NOTES__COLLECTIONS", "2000"),
        ("CALLRING_MAX_AUDIT_LOG__KYC_V2", "800"),
    ];
    let l = Limits::from_vars(vars).expect("valid");
    assert_eq!((l.max_notes(), l.max_audit_log()), (1500, 700));
    let l = Limits::from_vars_for("collections", vars).expect("valid");
    assert_eq!((l.max_notes(), l.max_audit_log()), (2000, 700));
    let l = Limits::from_vars_for("kyc-v2", vars).expect("valid");
    assert_eq!((l.max_notes(), l.max_audit_log()), (1500, 800));
    assert_eq!(
        Limits::override_var(ENV_MAX_NOTES, "Kyc v2.1"),
        "CALLRING_MAX_NOTES__KYC_V2_1"
    );
    let l = Limits::from_vars([(ENV_MAX_NOTES, MAX_LIMIT.to_string())]).expect("the maximum");
    assert_eq!(l.max_notes(), MAX_LIMIT);
}

#[test]
fn empty_value() {
    for value in ["", "   "] {
        let e = err(&[(ENV_MAX_NOTES, value)]);
        assert_eq!(
            e,
            LimitsError::Empty {
                var: ENV_MAX_NOTES.into()
            }
        );
        assert_eq!(e.to_string(), "CALLRING_MAX_NOTES is set but empty");
    }
}

#[test]
fn not_a_number() {
    for value in [
        "abc", "12a", "-5", "+5", "1e3", "1_000", "10.0", "0x10", "٣",
    ] {
        let e = err(&[(ENV_MAX_AUDIT_LOG, value)]);
        assert_eq!(
            e,
            LimitsError::NotANumber {
                var: ENV_MAX_AUDIT_LOG.into(),
                value: value.into()
            },
            "{value:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains(ENV_MAX_AUDIT_LOG) && text.contains(value),
            "{text}"
        );
    }
}

#[test]
fn zero() {
    for value in ["0", "000"] {
        let e = err(&[(ENV_MAX_NOTES, value)]);
        assert_eq!(
            e,
            LimitsError::Zero {
                var: ENV_MAX_NOTES.into()
            }
        );
        assert!(e.to_string().contains("at least 1"));
    }
    assert!(matches!(
        Limits::new(0, 5),
        Err(LimitsError::Zero { var }) if var == "max_notes"
    ));
    assert!(matches!(
        Limits::new(5, 0),
        Err(LimitsError::Zero { var }) if var == "max_audit_log"
    ));
}

#[test]
fn above_the_maximum() {
    let over = (MAX_LIMIT + 1).to_string();
    for value in [over.as_str(), "99999999999999999999999999"] {
        let e = err(&[(ENV_MAX_NOTES, value)]);
        assert_eq!(
            e,
            LimitsError::TooLarge {
                var: ENV_MAX_NOTES.into(),
                value: value.into(),
                max: MAX_LIMIT
            }
        );
        let text = e.to_string();
        assert!(text.contains(value) && text.contains("1000000"), "{text}");
    }
    assert!(matches!(
        Limits::new(1, MAX_LIMIT + 1),
        Err(LimitsError::TooLarge { var, .. }) if var == "max_audit_log"
    ));
}

#[test]
fn a_bad_general_value_is_reported_even_when_an_override_wins() {
    let vars = [(ENV_MAX_NOTES, "lots"), ("CALLRING_MAX_NOTES__SALES", "10")];
    let e = Limits::from_vars_for("sales", vars).unwrap_err();
    assert!(matches!(e, LimitsError::NotANumber { ref var, .. } if var == ENV_MAX_NOTES));
}

#[test]
fn a_bad_override_names_the_override() {
    let e = Limits::from_vars_for("sales", [("CALLRING_MAX_AUDIT_LOG__SALES", "0")]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "CALLRING_MAX_AUDIT_LOG__SALES=\"0\": must be at least 1"
    );
}

#[test]
fn deserialising_validates() {
    let ok: Limits =
        serde_json::from_str(r#"{"max_notes": 3, "max_audit_log": 4}"#).expect("valid");
    assert_eq!((ok.max_notes(), ok.max_audit_log()), (3, 4));
    let e = serde_json::from_str::<Limits>(r#"{"max_notes": 0, "max_audit_log": 4}"#).unwrap_err();
    assert!(e.to_string().contains("max_notes"), "{e}");
    // The byte limits round-trip and are validated too.
    let l = Limits::new(3, 4)
        .unwrap()
        .with_entry_bytes(100, 200)
        .unwrap();
    let json = serde_json::to_string(&l).unwrap();
    assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), l);
    let e = serde_json::from_str::<Limits>(
        r#"{"max_notes": 3, "max_audit_log": 4, "max_note_bytes": 0}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("max_note_bytes"), "{e}");
}

#[test]
fn entry_byte_limits_from_variables_and_overrides() {
    let vars = [
        (ENV_MAX_NOTE_BYTES, "16384"),
        (ENV_MAX_EVENT_BYTES, "20000"),
        ("CALLRING_MAX_EVENT_BYTES__KYC_V2", "65536"),
    ];
    let l = Limits::from_vars(vars).expect("valid");
    assert_eq!((l.max_note_bytes(), l.max_event_bytes()), (16384, 20000));
    let l = Limits::from_vars_for("kyc-v2", vars).expect("valid");
    assert_eq!((l.max_note_bytes(), l.max_event_bytes()), (16384, 65536));
    assert_eq!((l.max_notes(), l.max_audit_log()), (1000, 500));

    assert_eq!(
        err(&[(ENV_MAX_NOTE_BYTES, "0")]).to_string(),
        "CALLRING_MAX_NOTE_BYTES=\"0\": must be at least 1"
    );
    assert!(matches!(
        err(&[(ENV_MAX_EVENT_BYTES, "8k")]),
        LimitsError::NotANumber { var, .. } if var == ENV_MAX_EVENT_BYTES
    ));
    let over = (MAX_ENTRY_LIMIT + 1).to_string();
    assert_eq!(
        err(&[(ENV_MAX_NOTE_BYTES, &over)]),
        LimitsError::TooLarge {
            var: ENV_MAX_NOTE_BYTES.into(),
            value: over.clone(),
            max: MAX_ENTRY_LIMIT
        }
    );
    assert!(matches!(
        Limits::default().with_entry_bytes(10, MAX_ENTRY_LIMIT + 1),
        Err(LimitsError::TooLarge { var, .. }) if var == "max_event_bytes"
    ));
    // The largest accepted lengths build a call (no BuildError to hide).
    let l = Limits::default()
        .with_entry_bytes(MAX_ENTRY_LIMIT, MAX_ENTRY_LIMIT)
        .unwrap();
    let call = CallState::new("big", l);
    call.append_note(&"n".repeat(MAX_ENTRY_LIMIT))
        .expect("fits");
    assert!(matches!(
        call.append_note(&"n".repeat(MAX_ENTRY_LIMIT + 1)),
        Err(CallError::TooLarge {
            max: MAX_ENTRY_LIMIT,
            ..
        })
    ));
}

/// 2025-11-25 09:30:00 UTC.
const T0: i64 = 1_764_063_000_000_000_000;
const PREFIX: &str = "[2025-11-25 09:30:00] ";

/// Appends `texts` to a call keeping `max_notes`, then checks that exactly
/// the newest `max_notes` remain, in order, byte-identical, through both
/// `notes()` and `all_notes()` (whose format is unchanged).
fn keeps_the_newest(texts: &[String], max_notes: usize) {
    let limits = Limits::new(max_notes, 500).expect("valid");
    let call = CallState::builder("acceptance")
        .limits(limits)
        .clock(|| Timestamp::from_unix_nanos(T0))
        .build();
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(call.append_note(text).expect("live call"), i as u64);
    }
    let newest = &texts[texts.len() - max_notes..];
    let notes: Vec<String> = call.notes().into_iter().map(|n| n.text).collect();
    assert_eq!(notes, newest);
    let rendered: Vec<String> = newest.iter().map(|t| format!("{PREFIX}{t}")).collect();
    assert_eq!(call.all_notes(), rendered.join("\n"));
    let m = call.metrics().notes;
    assert_eq!(
        (m.appended, m.retained),
        (texts.len() as u64, max_notes as u64)
    );
}

/// The text of note `i`, `len` bytes, naming its index (so an out-of-order or
/// foreign note is caught), no newlines.
fn note(i: usize, len: usize) -> String {
    let mut s = format!("note {i:05} ");
    s.truncate(len);
    while s.len() < len {
        s.push(char::from(b'a' + (s.len() % 26) as u8));
    }
    s
}

#[test]
fn max_notes_counts_notes_of_any_length() {
    // 150-byte notes: longer than a slot's inline payload.
    let texts: Vec<String> = (0..1100).map(|i| note(i, 150)).collect();
    keeps_the_newest(&texts, 1000);
    // Random lengths 1..=4000 (within the default 4096-byte note limit).
    let mut rng = fastrand::Rng::with_seed(4000);
    let texts: Vec<String> = (0..1100).map(|i| note(i, rng.usize(1..=4000))).collect();
    keeps_the_newest(&texts, 1000);
}

#[test]
fn max_audit_log_counts_events_of_any_size() {
    let call = CallState::new("events", Limits::new(10, 100).expect("valid"));
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..150 {
        let mut details = Details::new();
        details.insert("blob".into(), "e".repeat(rng.usize(0..=6000)).into());
        let seq = call
            .log_event(&AuditEventType::DataAccessed, Some("agent"), &details)
            .expect("fits the default 8192-byte events");
        assert_eq!(seq, i);
    }
    let seqs: Vec<u64> = call.audit_events().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (50..150).collect::<Vec<_>>());
}

/// The process environment, through variables only this test uses (the
/// override for a script type no other test names).
#[test]
fn from_env_reads_the_process_environment() {
    let script = "limits-env-test";
    let var = Limits::override_var(ENV_MAX_NOTES, script);
    std::env::set_var(&var, "1234");
    let l = Limits::from_env_for(script).expect("valid");
    assert_eq!(l.max_notes(), 1234);
    std::env::set_var(&var, "nope");
    let e = Limits::from_env_for(script).unwrap_err();
    assert!(e.to_string().contains(&var));
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        std::env::set_var(&var, std::ffi::OsStr::from_bytes(b"\xff12"));
        let e = Limits::from_env_for(script).unwrap_err();
        assert_eq!(e, LimitsError::NotUnicode { var: var.clone() });
        assert!(e.to_string().contains("not valid Unicode"));
    }
    std::env::remove_var(&var);
}
