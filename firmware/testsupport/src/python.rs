//! The Python client scripts in `tests/py` (smtplib, poplib, a raw line
//! client in `mailtest.py`, an SMTP sink in `sink.py`): real clients
//! driving a node as users' programs do.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::node::Node;
use crate::store::{text, Fixture};

/// The scripts' directory: `tests/py` at the top of the workspace.
pub fn py_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/py")
}

/// `python3 tests/py/SCRIPT`, able to import the scripts' shared module
/// (`mailtest`), leaving no bytecode in the tree.
pub fn script(script: &str) -> Command {
    let mut c = Command::new("python3");
    c.arg(py_dir().join(script)).env("PYTHONPATH", py_dir()).env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

/// Runs a Python client script against `node` with extra environment, and
/// fails the test with the script's output if the script fails.
pub fn python(name: &str, node: &Node, f: &Fixture, extra_env: &[(&str, &str)]) -> String {
    let mut c = script(name);
    c.env("STORE", &f.store);
    for (k, v) in node.env() {
        c.env(k, v);
    }
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let o = c.output().expect("python3 must be installed");
    let out = text(&o);
    assert!(o.status.success(), "{name} failed:\n{out}\n--- node log ---\n{}", node.log_text());
    out
}
