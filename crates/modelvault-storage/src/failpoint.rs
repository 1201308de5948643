//! Crash points for tests. Built only with the `test-hooks` feature (which
//! only dev-dependencies enable): such a build exits with status 86 at a
//! point named in `MODELVAULT_FAILPOINTS` (comma-separated). Any other
//! build compiles [`failpoint`] to nothing and never reads the variable.

/// Exits the process if `name` is listed in `MODELVAULT_FAILPOINTS`
/// (test-hooks builds only).
#[cfg(feature = "test-hooks")]
pub fn failpoint(name: &str) {
    if std::env::var("MODELVAULT_FAILPOINTS").is_ok_and(|v| v.split(',').any(|f| f.trim() == name))
    {
        eprintln!("failpoint {name}: exiting");
        std::process::exit(86);
    }
}

/// No-op: failpoints exist only in test-hooks builds.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn failpoint(_name: &str) {}
