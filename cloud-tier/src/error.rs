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
    #[error("object store: {message}")]
    Store {
        /// What failed.
        message: String,
        /// The store's (or the background task's) error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
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
    /// Something is already at the path.
    #[error("{0} exists")]
    Exists(String),
    /// The directory holds entries.
    #[error("{0} is not empty")]
    NotEmpty(String),
    /// The store cannot do this.
    #[error("{0}")]
    Unsupported(String),
    /// The cluster cannot serve this now (the nodes holding a path's
    /// newest data are unreachable, too few nodes for the write's copies).
    #[error("{0}")]
    Unavailable(String),
}

impl NodeError {
    /// A store failure described by `message` alone.
    pub fn store(message: impl Into<String>) -> NodeError {
        NodeError::Store { message: message.into(), source: None }
    }

    /// A background task (a blocking disk or journal job) that did not finish.
    pub fn task(what: &str, e: tokio::task::JoinError) -> NodeError {
        NodeError::Store { message: format!("{what}: {e}"), source: Some(Box::new(e)) }
    }

    /// The wire code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            NodeError::NotFound(_) => ErrorCode::NotFound,
            NodeError::InvalidInput(_) => ErrorCode::InvalidInput,
            NodeError::Store { .. } | NodeError::Changed(_) => ErrorCode::Unavailable,
            NodeError::Corrupt(_) => ErrorCode::Corrupted,
            NodeError::Io(_) => ErrorCode::Internal,
            NodeError::Chunk(ferry_protocol::chunk::ChunkError::Hash(_)) => ErrorCode::Corrupted,
            NodeError::Chunk(_) => ErrorCode::InvalidInput,
            NodeError::Unauthorized(_) => ErrorCode::Unauthorized,
            NodeError::Unavailable(_) => ErrorCode::Unavailable,
            NodeError::Exists(_) => ErrorCode::Exists,
            NodeError::NotEmpty(_) => ErrorCode::NotEmpty,
            NodeError::Unsupported(_) => ErrorCode::Unsupported,
        }
    }

    pub(crate) fn from_store(path: &str, e: object_store::Error) -> NodeError {
        match e {
            object_store::Error::NotFound { .. } => NodeError::NotFound(path.to_string()),
            object_store::Error::Precondition { .. } => NodeError::Changed(path.to_string()),
            e @ object_store::Error::PermissionDenied { .. } => NodeError::Unauthorized(format!("{path}: {e}")),
            other => NodeError::Store { message: format!("{path}: {other}"), source: Some(Box::new(other)) },
        }
    }
}

/// Errors in a cache node's configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A mount's URL or options are invalid.
    #[error("mount {mount}: {reason}")]
    Mount { mount: String, reason: String },
    /// A mount's store could not be opened.
    #[error("mount {mount}: {source}")]
    Store {
        /// The mount's name.
        mount: String,
        /// Why its store did not open.
        #[source]
        source: OpenError,
    },
    /// Some other value is invalid.
    #[error("{0}")]
    Invalid(String),
}

/// Why a store URL could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Not a URL.
    #[error("bad url {url:?}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },
    /// A `file://` URL naming no directory.
    #[error("directory {0} does not exist")]
    NoDirectory(std::path::PathBuf),
    /// object_store refused the URL or its options.
    #[error("{0}")]
    Store(#[from] object_store::Error),
}
