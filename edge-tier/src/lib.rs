//! ferry's robot agent: log spool and uploader, model receiver.
//!
//! Not built yet. The crate exists so the workspace's dependency directions
//! (`agent -> edge-tier -> protocol`, no FUSE or libtorch) hold from the start.
