//! `Limits`: defaults, variables, per-script overrides, and every error.
#![cfg(not(loom))]

use callring::call::{Limits, LimitsError, ENV_MAX_AUDIT_LOG, ENV_MAX_NOTES, MAX_LIMIT};

fn err(vars: &[(&str, &str)]) -> LimitsError {
    Limits::from_vars(vars.iter().copied()).unwrap_err()
}

#[test]
fn defaults_are_the_originals() {
    let l = Limits::default();
    assert_eq!((l.max_notes(), l.max_audit_log()), (1000, 500));
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
