//! The CPU time a benchmark process has used, shared by the store and rebuild benchmarks
//! (`#[path]`-included: they live in two crates and need nothing else in common).

/// CPU seconds (user + system, every thread) this process has used, from `/proc/self/stat`
/// (Linux; clock ticks of 1/100 s). `None` where that file is unavailable. On a shared machine
/// the wall-clock rate swings with the load; the CPU time a run takes swings much less.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name, which may itself contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}
