//! Stopping on a signal: the one place `pop serve`, `pop worker` and a looping `pop reap` learn
//! that they should stop (Ctrl-C, the SIGTERM Kubernetes sends before killing a pod, or a
//! hang-up).

use tokio::sync::watch;

/// Resolves once the stop flag is set.
pub(crate) async fn stopped(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone, which also means "stop".
    let _ = rx.wait_for(|stop| *stop).await;
}

/// SIGXFSZ, a write past the file-size limit (`ulimit -f`), on Linux.
#[cfg(target_os = "linux")]
const SIGXFSZ: std::os::raw::c_int = 25;

/// Makes a write past the file-size limit fail (EFBIG) instead of killing the process: the
/// default action of SIGXFSZ killed `pop serve` without a line in its log, and a restart under
/// the same limit said "ready" and died at its first write (ops3am5). Failing, the write is the
/// store's error like a full disk's: the request is refused, `/readyz` says so, the process
/// stays. Listening for the signal (tokio keeps a listener registered for the process's life)
/// replaces its default action without `unsafe`. Call once, inside the runtime.
pub(crate) fn survive_file_size_limit() {
    #[cfg(target_os = "linux")]
    if let Err(e) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ))
    {
        tracing::warn!(error = %e, "cannot listen for SIGXFSZ: a write past `ulimit -f` kills pop");
    }
}

/// The file-size limit (`ulimit -f`) this process runs under, in bytes, when it has one:
/// read from `/proc/self/limits` (Linux; elsewhere, and when it cannot be read, none).
pub(crate) fn file_size_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max file size"))?;
    // "Max file size   <soft>   <hard>   bytes"
    line.trim_start_matches("Max file size").split_whitespace().next()?.parse().ok()
}

/// Whether this process started with SIGHUP ignored (`nohup`, `trap "" HUP`): bit 0 of the
/// ignored-signals mask in `/proc/self/status` (Linux; elsewhere, and when it cannot be read,
/// not ignored). Read rather than asked with `sigaction`, which needs `unsafe`.
#[cfg(unix)]
fn hangup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & 1 == 1)
    })
}

/// A listener for one Unix signal, registered now (a signal that arrives before the returned
/// future is first polled is not lost to its default action, which for SIGHUP is to die); it
/// waits for ever when the signal cannot be listened for.
#[cfg(unix)]
fn unix_signal(
    kind: tokio::signal::unix::SignalKind,
    name: &'static str,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let registered = tokio::signal::unix::signal(kind);
    async move {
        match registered {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for {name}");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Resolves on Ctrl-C, SIGTERM (what Kubernetes sends before killing a pod) or SIGHUP (a
/// closed terminal or a dropped SSH session: without it the process died on the spot, a
/// worker leaving its agendas held until their leases ran out; not when started with the
/// hang-up ignored, as `nohup` does) and raises the stop flag for everything else. Shared by
/// `pop serve`, `pop worker` and a looping `pop reap`. pop reads no configuration after it
/// starts, so a hang-up means stop, not reload. The signals are listened for from the call on,
/// before the future runs (a hang-up just after `pop serve` said it listens killed it: the
/// listener was registered only when the spawned task first ran).
pub(crate) fn shutdown_signal(
    stop: watch::Sender<bool>,
    what: &'static str,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, term, hup) = (
        unix_signal(tokio::signal::unix::SignalKind::interrupt(), "Ctrl-C"),
        unix_signal(tokio::signal::unix::SignalKind::terminate(), "SIGTERM"),
        // Started under `nohup` (or with the hang-up otherwise ignored), it is meant to
        // outlive its terminal: listening would replace that "ignore" with a stop.
        (!hangup_ignored())
            .then(|| unix_signal(tokio::signal::unix::SignalKind::hangup(), "SIGHUP")),
    );
    #[cfg(not(unix))]
    let (interrupt, term, hup) = (
        async {
            if let Err(e) = tokio::signal::ctrl_c().await {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        },
        std::future::pending::<()>(),
        None::<std::future::Pending<()>>,
    );
    async move {
        let hup = async {
            match hup {
                Some(hup) => hup.await,
                None => std::future::pending::<()>().await,
            }
        };
        let signal = tokio::select! {
            () = interrupt => "SIGINT",
            () = term => "SIGTERM",
            () = hup => "SIGHUP",
        };
        tracing::info!(signal, "shutting down: {what}");
        let _ = stop.send(true);
    }
}
