//! The agent's Prometheus metrics (`metrics_listen` in `edge.toml`), read
//! from its spool and model directory at each scrape, so they show what
//! the agent has durably done, in the text exposition format.

use std::fmt::Write;
use std::path::Path;

use crate::agent::status;
use crate::config::EdgeConfig;
use crate::error::EdgeError;
use crate::models::Receiver;
use crate::spool::Spool;

/// The metrics text for the agent configured by `cfg`.
pub fn render(cfg: &EdgeConfig) -> Result<String, EdgeError> {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP ferry_edge_{name} {help}\n# TYPE ferry_edge_{name} {kind}\nferry_edge_{name} {value}"
        );
    };
    if cfg.spool.exists() {
        let s = status(&Spool::open_read_only(&cfg.spool)?)?;
        metric("files_pending", "gauge", "Files waiting to upload (or growing)", s.files_pending as f64);
        metric("queued_bytes", "gauge", "Bytes of watched files not yet committed to the store", s.queued_bytes as f64);
        metric("files_uploaded_total", "counter", "Files uploaded whole", s.files_uploaded as f64);
        metric("uploaded_bytes_total", "counter", "Bytes of files uploaded whole", s.uploaded_bytes as f64);
        metric("wire_bytes_total", "counter", "Bytes sent on the wire (compressed chunks)", s.wire_bytes as f64);
        metric("raw_bytes_total", "counter", "Bytes of chunks sent, before compression", s.raw_bytes as f64);
        metric("rate_bytes_per_second", "gauge", "Recent upload rate on the wire", s.rate_bps);
        metric(
            "files_quarantined",
            "gauge",
            "Files that cannot be uploaded (see ferry edge status)",
            s.files_quarantined as f64,
        );
        metric("files_deleted_total", "counter", "Files deleted after upload, for space", s.files_deleted as f64);
        metric("files_dropped_total", "counter", "Files deleted before upload, for space", s.files_dropped as f64);
        let size: u64 = ["", "-wal"]
            .iter()
            .filter_map(|suffix| {
                let mut p = cfg.spool.clone().into_os_string();
                p.push(suffix);
                std::fs::metadata(p).ok().map(|m| m.len())
            })
            .sum();
        metric("spool_bytes", "gauge", "Size of the spool database on disk", size as f64);
        if s.updated_ms > 0 {
            metric(
                "status_updated_seconds",
                "gauge",
                "When the agent last wrote its status (Unix time)",
                s.updated_ms as f64 / 1000.0,
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferry_edge_model_installed The model version installed and running (1 per model)\n\
         # TYPE ferry_edge_model_installed gauge"
    );
    for model in models(&cfg.models.dir) {
        if let Some(version) = Receiver::current(&cfg.models.dir, &model) {
            let _ = writeln!(
                out,
                "ferry_edge_model_installed{{model=\"{}\",version=\"{}\"}} 1",
                label(&model),
                label(&version)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferry_build_info The running ferry's version (always 1)\n# TYPE ferry_build_info gauge\n\
         ferry_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}

/// The models with a directory under `dir`.
fn models(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// A label value with `\`, `"` and newlines escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
