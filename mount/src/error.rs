//! The mount's error: an errno for the kernel and the cause for the log.

use std::sync::Arc;

use ferry_protocol::{ErrorCode, ProtocolError};

/// A failed filesystem call. [`FsError::errno`] is what the kernel is
/// answered; the cause stays attached as the error's source. Clone, because
/// one failed page fetch answers every read waiting for it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FsError {
    /// The filesystem refused the call itself (a bad name, a directory
    /// opened as a file, an operation it does not support).
    #[error("{message}")]
    Refused {
        /// The errno to answer.
        errno: i32,
        /// What was refused and why.
        message: String,
    },
    /// A cache node answered with an error, or could not be reached.
    #[error("{context}: {source}")]
    Node {
        /// What the mount was doing.
        context: String,
        /// The node's answer or the connection's failure.
        #[source]
        source: Arc<ProtocolError>,
    },
    /// A local file (staging file, local copy) failed.
    #[error("{context}: {source}")]
    Local {
        /// What the mount was doing.
        context: String,
        /// The failure.
        #[source]
        source: Arc<std::io::Error>,
    },
}

impl FsError {
    /// A refusal answering `errno`, with `message` for the log.
    pub fn new(errno: i32, message: impl Into<String>) -> FsError {
        FsError::Refused { errno, message: message.into() }
    }

    /// The errno the kernel is answered.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Refused { errno, .. } => *errno,
            FsError::Node { source, .. } => match &**source {
                ProtocolError::Remote { code, .. } => match code {
                    ErrorCode::NotFound => libc::ENOENT,
                    ErrorCode::InvalidInput => libc::EINVAL,
                    ErrorCode::Unauthorized => libc::EACCES,
                    ErrorCode::TooLarge => libc::EFBIG,
                    ErrorCode::VersionMismatch => libc::EPROTO,
                    ErrorCode::Exists => libc::EEXIST,
                    ErrorCode::NotEmpty => libc::ENOTEMPTY,
                    ErrorCode::Unsupported => libc::ENOTSUP,
                    ErrorCode::Unavailable | ErrorCode::Corrupted | ErrorCode::Internal => libc::EIO,
                },
                ProtocolError::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
                _ => libc::EIO,
            },
            FsError::Local { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
        }
    }

    /// Whether the node said the path does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Node { source, .. }
            if matches!(&**source, ProtocolError::Remote { code: ErrorCode::NotFound, .. }))
    }
}

/// Adds what the mount was doing to an error's cause.
pub trait Context<T> {
    /// `context` says what failed ("read /a/b", "staging file").
    fn context(self, context: impl FnOnce() -> String) -> Result<T, FsError>;
}

impl<T> Context<T> for Result<T, ProtocolError> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, FsError> {
        self.map_err(|e| FsError::Node { context: context(), source: Arc::new(e) })
    }
}

impl<T> Context<T> for Result<T, std::io::Error> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, FsError> {
        self.map_err(|e| FsError::Local { context: context(), source: Arc::new(e) })
    }
}

impl From<ProtocolError> for FsError {
    fn from(e: ProtocolError) -> FsError {
        FsError::Node { context: "cache node".into(), source: Arc::new(e) }
    }
}

impl From<std::io::Error> for FsError {
    fn from(e: std::io::Error) -> FsError {
        FsError::Local { context: "local file".into(), source: Arc::new(e) }
    }
}

/// Result of a filesystem call.
pub type FsResult<T> = Result<T, FsError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn errors_answer_the_errno_of_their_cause_and_keep_it() {
        let e: FsError = Err::<(), _>(ProtocolError::Remote { code: ErrorCode::NotFound, message: "no /a".into() })
            .context(|| "stat /a".into())
            .expect_err("an error");
        assert_eq!(e.errno(), libc::ENOENT);
        assert!(e.is_not_found());
        assert!(e.to_string().starts_with("stat /a: "), "{e}");
        assert!(e.source().is_some_and(|s| s.to_string().contains("no /a")));
        let io: FsError = std::io::Error::from_raw_os_error(libc::ENOSPC).into();
        assert_eq!(io.errno(), libc::ENOSPC);
        assert!(!io.is_not_found());
        assert_eq!(FsError::new(libc::EXDEV, "no").errno(), libc::EXDEV);
    }
}
