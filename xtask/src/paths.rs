//! Where things are: the workspace, the cargo target directory, the cache.

use std::path::PathBuf;

/// The workspace root (the parent of this crate).
pub fn workspace() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, as cargo does,
/// else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace().join(d)
            }
        }
        _ => workspace().join("target"),
    }
}

/// The images: `<target>/image/<board>/<role>/`.
pub fn image_dir(board: &str, role: &str) -> PathBuf {
    target_dir().join("image").join(board).join(role)
}

/// Downloaded packages and what was unpacked from them, kept between builds
/// (and across `cargo clean`): `MAILFORT_CACHE_DIR`, else `.cache/` in the
/// workspace.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("MAILFORT_CACHE_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => workspace().join(".cache"),
    }
}

/// A QEMU layout's run directory: disks, console sockets and logs, the DNS
/// server's files, pid files.
pub fn run_dir(layout: &str) -> PathBuf {
    target_dir().join("qemu").join(layout)
}
