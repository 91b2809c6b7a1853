//! The inbox: a directory through which writers on this host hand whole
//! files to the node (`Adopt`) instead of sending their bytes. A token file
//! in it proves to a client that it shares the directory with the node.

use ferry_protocol::codec::Response;
use ferry_protocol::{ErrorCode, PROTOCOL_VERSION};

use crate::error::NodeError;

use super::CacheNode;

/// Where clients on this host leave files for [`CacheNode::handle_adopt`].
#[derive(Debug)]
pub(crate) struct Inbox {
    pub(crate) dir: std::path::PathBuf,
    pub(crate) token: String,
}

/// Makes the inbox directory (owner-only) and writes a fresh token into it.
pub(crate) fn open_inbox(dir: &std::path::Path) -> Result<Inbox, NodeError> {
    use rand::Rng;
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    let token: String = {
        let mut rng = rand::rng();
        (0..16).map(|_| format!("{:02x}", rng.random::<u8>())).collect()
    };
    let tmp = dir.join(".node.tmp");
    std::fs::write(&tmp, &token)?;
    std::fs::rename(&tmp, dir.join(ferry_protocol::client::INBOX_TOKEN_FILE))?;
    Ok(Inbox { dir: dir.to_path_buf(), token })
}

impl CacheNode {
    /// Answers `Hello`: the protocol version, this node's id and page size,
    /// and its inbox (a client that finds the token there shares this host).
    pub fn handle_hello(&self, version: u16) -> Response {
        if version != PROTOCOL_VERSION {
            return Response::Error {
                code: ErrorCode::VersionMismatch,
                message: format!("this node speaks protocol version {PROTOCOL_VERSION}, not {version}"),
            };
        }
        Response::HelloOk {
            version: PROTOCOL_VERSION,
            node_id: self.node_id.clone(),
            page_size: u32::try_from(self.cache.page_size()).unwrap_or(u32::MAX),
            inbox: self.inbox.dir.to_string_lossy().into_owned(),
            inbox_token: self.inbox.token.clone(),
            replicas: self
                .cache
                .namespace()
                .mounts()
                .filter_map(|m| Some((m.name.to_string(), u32::try_from(m.replicas?).unwrap_or(u32::MAX))))
                .collect(),
        }
    }

    /// Answers `Adopt`: takes over the file `name` in this node's inbox,
    /// `len` bytes, as the object `path`, without copying it.
    pub async fn handle_adopt(&self, path: &str, name: &str, len: u64) -> Result<(bool, String), NodeError> {
        let (path, resolved) = self.writable(path)?;
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name.len() <= 255
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !plain {
            return Err(NodeError::InvalidInput(format!("{name:?} is not a plain file name in the inbox")));
        }
        let entry = self.journal.adopt(&path, &self.inbox.dir.join(name), len).await?;
        self.committed(&path, &resolved.mount, &entry).await
    }

    /// The inbox directory clients on this host may hand files over in.
    pub fn inbox_dir(&self) -> &std::path::Path {
        &self.inbox.dir
    }
}
