//! Small durable-file helpers.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::time::SystemTime;

/// fsyncs a directory so that entries created, linked or renamed in it are
/// on stable storage (on NFS this becomes a COMMIT of the directory).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `contents` atomically: a temporary file beside it,
/// fsynced, renamed over the target, and the directory fsynced. Readers
/// see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}.{}", std::process::id(), unique_suffix()));
    let result = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and its parents and fsyncs the new entries' parents.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_dir_durable(parent)?;
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    sync_dir(parent)
}

/// Sets a file's mtime to the current time of the filesystem that holds it
/// (utimensat with UTIME_NOW: on NFS the server's clock, RFC 7530 SETATTR
/// set_to_server_time4) and returns that time.
pub fn touch_server_time(path: &Path) -> io::Result<SystemTime> {
    let f = OpenOptions::new().write(true).create(true).truncate(false).open(path)?;
    use std::os::fd::AsRawFd;
    // SAFETY: a valid fd and a null times pointer (= both times to now).
    let rc = unsafe { libc::futimens(f.as_raw_fd(), std::ptr::null()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    f.metadata()?.modified()
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ (N.fetch_add(1, Ordering::Relaxed) << 48) ^ rand::random::<u32>() as u64
}
