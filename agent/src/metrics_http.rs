//! The metrics endpoint of the robot agent and the mount: `/metrics`,
//! `/healthz` and `/readyz` over plain HTTP on a thread of its own (the
//! cache node serves its own from its runtime).

use std::sync::Arc;

use anyhow::Result;

/// A running endpoint; [`Endpoint::stop`] ends it.
pub struct Endpoint {
    server: Arc<tiny_http::Server>,
    thread: std::thread::JoinHandle<()>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("addr", &self.addr()).finish_non_exhaustive()
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

impl Endpoint {
    /// Serves on `listen` (`HOST:PORT`; port 0 picks one): `/metrics` from
    /// `render`, `/readyz` 200 while `ready` says so (503 otherwise),
    /// `/healthz` 200 while the process runs. `key` names the setting in
    /// errors (`metrics_listen`, `--metrics-listen`).
    pub fn start(
        key: &str,
        listen: &str,
        render: impl Fn() -> Result<String, String> + Send + 'static,
        ready: impl Fn() -> bool + Send + 'static,
    ) -> Result<Endpoint> {
        let server = tiny_http::Server::http(listen).map_err(|e| anyhow::anyhow!("{key} {listen}: {e}"))?;
        let server = Arc::new(server);
        let serving = server.clone();
        let thread = std::thread::spawn(move || {
            for req in serving.incoming_requests() {
                let path = req.url().split('?').next().unwrap_or_default().to_string();
                let (code, body, kind) = match path.as_str() {
                    "/metrics" => match render() {
                        Ok(text) => (200, text, "text/plain; version=0.0.4; charset=utf-8"),
                        Err(e) => (500, format!("{e}\n"), TEXT),
                    },
                    "/healthz" => (200, "ok\n".to_string(), TEXT),
                    "/readyz" if ready() => (200, "ok\n".to_string(), TEXT),
                    "/readyz" => (503, "not ready\n".to_string(), TEXT),
                    _ => (404, "not found\n".to_string(), TEXT),
                };
                let header = tiny_http::Header::from_bytes("Content-Type", kind).expect("a valid header");
                let _ = req.respond(tiny_http::Response::from_string(body).with_status_code(code).with_header(header));
            }
        });
        Ok(Endpoint { server, thread })
    }

    /// The address it listens on.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        self.server.server_addr().to_ip()
    }

    /// Stops serving and waits for the thread.
    pub fn stop(self) {
        self.server.unblock();
        let _ = self.thread.join();
    }
}
