//! Makes `cfg(loom)` visible to doctests.
//!
//! `RUSTFLAGS="--cfg loom"` reaches rustc but not rustdoc, so doctests would
//! link a loom-built library (whose atomics panic outside `loom::model`) while
//! seeing `cfg(loom)` as false. Cargo passes build-script cfgs to rustdoc too,
//! so re-emitting `loom` here lets each example skip itself under loom.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=CARGO_CFG_LOOM");
    if std::env::var_os("CARGO_CFG_LOOM").is_some() {
        println!("cargo:rustc-cfg=loom");
    }
}
