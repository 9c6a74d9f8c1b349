//! Small durable-file helpers, and the one place where the store's files
//! and directories are created, so that their modes never depend on the
//! process's umask.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::SystemTime;

use nix::sys::time::TimeSpec;

/// The mode of every file in the store: mail, password hashes and keys
/// are for the mail system alone, never for other local users.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory in the store, for the same reason.
pub const DIR_MODE: u32 = 0o700;

/// Creates a new file (O_EXCL) with [`FILE_MODE`] whatever the umask,
/// open for reading and writing. The mode is given at creation (so the
/// file is never more open than that) and set again with fchmod, since the
/// umask may have taken owner bits off too.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new().read(true).write(true).create_new(true).mode(FILE_MODE).open(path)?;
    f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Creates one directory with [`DIR_MODE`] whatever the umask (its parent
/// must exist). An existing directory is an `AlreadyExists` error, as with
/// `fs::create_dir`.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().mode(DIR_MODE).create(dir)?;
    fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Takes the group and other bits off an existing file or directory (to
/// [`FILE_MODE`] / [`DIR_MODE`]) if it has any; symbolic links are left
/// alone. Returns whether the mode changed.
pub fn restrict_mode(path: &Path) -> io::Result<bool> {
    let m = fs::symlink_metadata(path)?;
    let want = if m.is_dir() {
        DIR_MODE
    } else if m.is_file() {
        FILE_MODE
    } else {
        return Ok(false);
    };
    if m.permissions().mode() & 0o777 == want {
        return Ok(false);
    }
    fs::set_permissions(path, Permissions::from_mode(want))?;
    Ok(true)
}

/// The environment variable that names a crash point (a test hook, see
/// [`crash_point`]).
pub const CRASH_AT_ENV: &str = "MAILFORT_CRASH_AT";

/// A test hook for crash safety: when the environment variable
/// [`CRASH_AT_ENV`] names `point` (`enqueue:after-link`, say, or
/// `enqueue:after-link@2` for its second passage), the process aborts
/// there, as a kill or a power cut would stop it. Unset (always, outside
/// tests) it does nothing but compare a string.
pub fn crash_point(point: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let target = TARGET.get_or_init(|| {
        let v = std::env::var(CRASH_AT_ENV).ok().filter(|v| !v.is_empty())?;
        match v.rsplit_once('@') {
            Some((p, n)) if n.parse::<u64>().is_ok() => Some((p.to_string(), n.parse().unwrap_or(1))),
            _ => Some((v, 1)),
        }
    });
    if let Some((p, n)) = target {
        if p == point && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("{CRASH_AT_ENV}: aborting at {point}");
            std::process::abort();
        }
    }
}

/// fsyncs a directory so that entries created, linked or renamed in it are
/// on stable storage (on NFS this becomes a COMMIT of the directory).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether `path` is on an NFS mount (NFS_SUPER_MAGIC, linux/magic.h).
pub fn is_nfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::NFS_SUPER_MAGIC)
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
    replace_file(path, contents, true, None)
}

/// [`write_atomic`] with a [`crash_point`] named `crash` between the
/// temporary file's fsync and the rename.
pub(crate) fn write_atomic_at(path: &Path, contents: &[u8], crash: &str) -> io::Result<()> {
    replace_file(path, contents, true, Some(crash))
}

/// Like [`write_atomic`], readers see the old file or the new one, never a
/// mix; but nothing is fsynced, so after a crash of the machine (or the
/// storage host) the old content may come back. For files whose loss costs
/// little (counters, status reports), written often.
pub fn write_atomic_nosync(path: &Path, contents: &[u8]) -> io::Result<()> {
    replace_file(path, contents, false, None)
}

/// What the names of [`write_atomic`]'s temporary files contain: a file
/// whose name begins with a dot and contains this is one, and one left by
/// a crash is removed by [`crate::Store::sweep_crash_leftovers`].
pub const TEMP_MARK: &str = ".tmp.";

fn replace_file(path: &Path, contents: &[u8], durable: bool, crash: Option<&str>) -> io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}{TEMP_MARK}{}.{}", std::process::id(), unique_suffix()));
    let result = (|| {
        // Private before the rename makes it visible.
        let mut f = create_private_file(&tmp)?;
        f.write_all(contents)?;
        if !durable {
            return fs::rename(&tmp, path);
        }
        f.sync_all()?;
        if let Some(point) = crash {
            crash_point(point);
        }
        fs::rename(&tmp, path)?;
        sync_dir(dir)?;
        persist_names_nfs(&f, is_nfs(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `dir` and its parents (with [`DIR_MODE`]) and fsyncs the new
/// entries' parents.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    create_dir_durable(parent)?;
    match create_private_dir(dir) {
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
    let f = OpenOptions::new().write(true).create(true).truncate(false).mode(FILE_MODE).open(path)?;
    nix::sys::stat::futimens(&f, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW)?;
    let m = f.metadata()?;
    // Created just now under a umask that took owner bits off, or left
    // by an older version with the umask's mode.
    if m.permissions().mode() & 0o777 != FILE_MODE {
        f.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    m.modified()
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

    /// The stamp as text (for a record that remembers a directory's state).
    pub fn encode(&self) -> String {
        format!("{}:{}:{}:{}.{}:{}.{}", self.dev, self.ino, self.size, self.mtime.0, self.mtime.1, self.ctime.0, self.ctime.1)
    }

    /// The inverse of [`FileStamp::encode`].
    pub fn decode(s: &str) -> Option<FileStamp> {
        let f: Vec<&str> = s.split(':').collect();
        if f.len() != 5 {
            return None;
        }
        let pair = |x: &str| -> Option<(i64, i64)> {
            let (a, b) = x.split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        };
        Some(FileStamp { dev: f[0].parse().ok()?, ino: f[1].parse().ok()?, size: f[2].parse().ok()?, mtime: pair(f[3])?, ctime: pair(f[4])? })
    }

    /// The modification time, seconds and nanoseconds since the epoch.
    pub fn mtime(&self) -> (i64, i64) {
        self.mtime
    }
}
