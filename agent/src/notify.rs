//! Telling systemd how a daemon is doing (`Type=notify` units in
//! deploy/systemd): `READY=1` once it serves, `WATCHDOG=1` at half the
//! unit's `WatchdogSec` while its runtime is alive, `STOPPING=1` when it
//! begins to stop. Without `NOTIFY_SOCKET` (not under systemd) nothing is sent.

/// Says the daemon is ready, with `status` as its one-line status, and
/// starts watchdog pings when the unit asks for them.
pub fn ready(status: &str) {
    let sent = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(status)]);
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot tell systemd the service is ready (NOTIFY_SOCKET)");
    }
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let every = std::time::Duration::from_micros(usec) / 2;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
            }
        });
    }
}

/// Says the daemon is stopping.
pub fn stopping() {
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
}
