//! The binary starts and knows its version. (Being the package's one
//! integration test, it also makes `cargo test` / `cargo nextest run`
//! build the `mailfort` binary that the process tests in `tests/` run.)

#[test]
fn version_is_the_package_version() {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_mailfort")).arg("--version").output().expect("run mailfort");
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("mailfort {}", env!("CARGO_PKG_VERSION")));
}
