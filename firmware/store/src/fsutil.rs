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

/// NFS_SUPER_MAGIC (linux/magic.h).
const NFS_SUPER_MAGIC: i64 = 0x6969;

/// Whether `path` is on an NFS mount.
pub fn is_nfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid C string and a zeroed statfs buffer.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NFS_SUPER_MAGIC
    }
}

/// Makes the current names of an open file durable on an NFS server.
///
/// Over NFS, fsync of a directory sends nothing (the client treats
/// directory operations as synchronous), and a server whose file system
/// has no "commit metadata" hook (btrfs, for one) leaves a new link or
/// rename in memory until its next periodic commit: a crash of the storage
/// host then loses a message that was acknowledged. Rewriting the file's
/// first byte with the same value and fsyncing makes the client send a
/// WRITE and a COMMIT, and the server's fsync of the inode (btrfs logs the
/// inode with all its names) makes the names durable too. The content
/// never changes. Does nothing for an empty file, or on a local disk,
/// where the directory fsync already did the job.
pub fn persist_names_nfs(file: &File, nfs: bool) -> io::Result<()> {
    if !nfs {
        return Ok(());
    }
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 1];
    if file.read_at(&mut b, 0)? == 1 {
        file.write_at(&b, 0)?;
        file.sync_all()?;
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically: a temporary file beside it,
/// fsynced, renamed over the target, and the directory fsynced. Readers
/// see the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace_file(path, contents, true)
}

/// Like [`write_atomic`], readers see the old file or the new one, never a
/// mix; but nothing is fsynced, so after a crash of the machine (or the
/// storage host) the old content may come back. For files whose loss costs
/// little (counters, status reports), written often.
pub fn write_atomic_nosync(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace_file(path, contents, false)
}

fn replace_file(path: &Path, contents: &[u8], durable: bool) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp.{}.{}", std::process::id(), unique_suffix()));
    let result = (|| {
        let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(&tmp)?;
        f.write_all(contents)?;
        if !durable {
            return fs::rename(&tmp, path);
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)?;
        persist_names_nfs(&f, is_nfs(dir))
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

/// What identifies one version of a file without reading it: a rename
/// over it changes the inode, a rewrite in place the size or times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    pub fn of(m: &fs::Metadata) -> FileStamp {
        use std::os::unix::fs::MetadataExt;
        FileStamp { dev: m.dev(), ino: m.ino(), size: m.size(), mtime: (m.mtime(), m.mtime_nsec()), ctime: (m.ctime(), m.ctime_nsec()) }
    }
}
