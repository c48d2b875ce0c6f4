//! Helpers for the unit tests of more than one module (test builds only). Owns nothing of
//! the product; depends on nothing in the crate.

/// Write system calls made by this thread so far (Linux task I/O accounting).
#[allow(clippy::unwrap_used)]
pub(crate) fn thread_writes() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    let line = io.lines().find(|l| l.starts_with("syscw:")).unwrap();
    line["syscw:".len()..].trim().parse().unwrap()
}
