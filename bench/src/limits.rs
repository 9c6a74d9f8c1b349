//! Process limits the load generators need.

/// Warns when the soft limit of open files is below `want` (a thousand
/// sessions need a thousand descriptors): `ulimit -n` raises it.
pub fn check_nofile(want: u64) {
    let Ok(s) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = s
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(soft) = soft {
        if soft < want {
            eprintln!("mailfort-bench: warning: open files limited to {soft}, {want} wanted (raise it with ulimit -n)");
        }
    }
}
