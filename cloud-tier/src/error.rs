//! The cache node's error type: detailed causes, each mapped to a wire code.

use ferry_protocol::ErrorCode;

/// What can go wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The path names nothing.
    #[error("{0} not found")]
    NotFound(String),
    /// The path is malformed or outside every mount.
    #[error("{0}")]
    InvalidInput(String),
    /// The object store failed or is unreachable; another try may work.
    #[error("object store: {0}")]
    Store(String),
    /// The object changed while it was being read; retry.
    #[error("{0} changed during the read; retry")]
    Changed(String),
    /// A cached page failed its checksum.
    #[error("corrupt page: {0}")]
    Corrupt(String),
    /// Local disk I/O failed.
    #[error("disk: {0}")]
    Io(#[from] std::io::Error),
    /// A chunk's wire bytes are not the chunk they claim to be.
    #[error(transparent)]
    Chunk(#[from] ferry_protocol::chunk::ChunkError),
    /// The peer may not do this.
    #[error("{0}")]
    Unauthorized(String),
}

impl NodeError {
    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::NotFound(_) => ErrorCode::NotFound,
            NodeError::InvalidInput(_) => ErrorCode::InvalidInput,
            NodeError::Store(_) | NodeError::Changed(_) => ErrorCode::Unavailable,
            NodeError::Corrupt(_) => ErrorCode::Corrupted,
            NodeError::Io(_) => ErrorCode::Internal,
            NodeError::Chunk(ferry_protocol::chunk::ChunkError::Hash(_)) => ErrorCode::Corrupted,
            NodeError::Chunk(_) => ErrorCode::InvalidInput,
            NodeError::Unauthorized(_) => ErrorCode::Unauthorized,
        }
    }

    pub(crate) fn from_store(path: &str, e: object_store::Error) -> NodeError {
        match e {
            object_store::Error::NotFound { .. } => NodeError::NotFound(path.to_string()),
            object_store::Error::Precondition { .. } => NodeError::Changed(path.to_string()),
            other => NodeError::Store(other.to_string()),
        }
    }
}

/// Errors in a cache node's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A mount's URL or options are invalid.
    #[error("mount {mount}: {reason}")]
    Mount { mount: String, reason: String },
    /// Some other value is invalid.
    #[error("{0}")]
    Invalid(String),
}
