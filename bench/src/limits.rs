//! Process limits the load generators need.

/// Raises the soft limit of open files to `want` (at most the hard limit),
/// so that a thousand sessions fit; says so when it cannot.
pub fn raise_nofile(want: u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) != 0 {
            return;
        }
        if r.rlim_cur as u64 >= want {
            return;
        }
        let new = (want as libc::rlim_t).min(r.rlim_max);
        let n = libc::rlimit { rlim_cur: new, rlim_max: r.rlim_max };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &n) != 0 || (new as u64) < want {
            eprintln!("mailfort-bench: open files limited to {new}, {want} wanted (ulimit -n)");
        }
    }
}
