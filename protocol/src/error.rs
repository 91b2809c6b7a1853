//! Errors that cross the wire, and the client-side error type.

use std::fmt;

/// Error codes carried in `Error` responses and QUIC stream resets.
///
/// Each code maps to what the caller should do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// The path does not exist. Do not retry.
    NotFound = 1,
    /// The request is malformed or names an invalid path. Do not retry.
    InvalidInput = 2,
    /// The peer's identity may not do this. Do not retry.
    Unauthorized = 3,
    /// The node cannot serve now (backing store down, shutting down). Retry, or try another node.
    Unavailable = 4,
    /// Data failed an integrity check. Retry; the node refetches.
    Corrupted = 5,
    /// A bug or unexpected failure on the node.
    Internal = 6,
    /// The peer speaks a protocol version this node does not.
    VersionMismatch = 7,
    /// The request asks for more than the node allows in one response.
    TooLarge = 8,
    /// Something is already at the path. Do not retry.
    Exists = 9,
    /// The directory is not empty. Do not retry.
    NotEmpty = 10,
    /// The store behind the path cannot do this. Do not retry.
    Unsupported = 11,
}

impl ErrorCode {
    /// Decodes a wire value; `None` for values this version does not define.
    pub fn from_wire(v: u16) -> Option<ErrorCode> {
        Some(match v {
            1 => ErrorCode::NotFound,
            2 => ErrorCode::InvalidInput,
            3 => ErrorCode::Unauthorized,
            4 => ErrorCode::Unavailable,
            5 => ErrorCode::Corrupted,
            6 => ErrorCode::Internal,
            7 => ErrorCode::VersionMismatch,
            8 => ErrorCode::TooLarge,
            9 => ErrorCode::Exists,
            10 => ErrorCode::NotEmpty,
            11 => ErrorCode::Unsupported,
            _ => return None,
        })
    }

    /// Decodes a stream-reset code; unknown values become [`ErrorCode::Internal`].
    pub fn from_u16(v: u16) -> ErrorCode {
        Self::from_wire(v).unwrap_or(ErrorCode::Internal)
    }

    /// Whether another attempt (here or at another node) may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Corrupted | ErrorCode::Internal)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorCode::NotFound => "not found",
            ErrorCode::InvalidInput => "invalid input",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Corrupted => "corrupted",
            ErrorCode::Internal => "internal error",
            ErrorCode::VersionMismatch => "protocol version mismatch",
            ErrorCode::TooLarge => "request too large",
            ErrorCode::Exists => "exists",
            ErrorCode::NotEmpty => "not empty",
            ErrorCode::Unsupported => "not supported by the store",
        };
        f.write_str(s)
    }
}

/// A cause kept inside a [`ProtocolError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What can go wrong talking to a node.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The node answered with an error.
    #[error("{code}: {message}")]
    Remote { code: ErrorCode, message: String },
    /// The bytes received do not form a valid message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Could not reach the node or the connection broke.
    #[error("connection: {message}")]
    Connection {
        /// What failed, for the log.
        message: String,
        /// The transport's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// TLS setup failed (bad certificate files, unknown CA, ...).
    #[error("tls: {message}")]
    Tls {
        /// What failed, for the log.
        message: String,
        /// The TLS or certificate library's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// Local I/O failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The peer answered with a message that does not fit the request.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl ProtocolError {
    /// A connection failure described by `message` alone.
    pub fn connection(message: impl Into<String>) -> ProtocolError {
        ProtocolError::Connection { message: message.into(), source: None }
    }

    /// A connection failure: `message` says what was tried, `source` why it failed.
    pub fn connection_from(message: impl Into<String>, source: impl Into<BoxError>) -> ProtocolError {
        ProtocolError::Connection { message: message.into(), source: Some(source.into()) }
    }

    /// A TLS failure described by `message` alone.
    pub fn tls(message: impl Into<String>) -> ProtocolError {
        ProtocolError::Tls { message: message.into(), source: None }
    }

    /// A TLS failure: `message` says what was tried, `source` why it failed.
    pub fn tls_from(message: impl Into<String>, source: impl Into<BoxError>) -> ProtocolError {
        ProtocolError::Tls { message: message.into(), source: Some(source.into()) }
    }

    /// The wire code this error corresponds to, for mapping to an action.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Remote { code, .. } => *code,
            ProtocolError::Malformed(_) | ProtocolError::Unexpected(_) => ErrorCode::Internal,
            ProtocolError::Connection { .. } | ProtocolError::Io(_) => ErrorCode::Unavailable,
            ProtocolError::Tls { .. } => ErrorCode::Unauthorized,
        }
    }

    /// Whether the node could not be reached or the connection broke (as
    /// opposed to an answer saying no).
    pub fn is_connection(&self) -> bool {
        matches!(self, ProtocolError::Connection { .. } | ProtocolError::Io(_))
    }

    /// Whether another node might serve the same request.
    pub fn try_elsewhere(&self) -> bool {
        match self {
            ProtocolError::Remote { code, .. } => code.is_retryable(),
            ProtocolError::Connection { .. } | ProtocolError::Io(_) => true,
            _ => false,
        }
    }
}

impl From<quinn::ConnectionError> for ProtocolError {
    fn from(e: quinn::ConnectionError) -> Self {
        ProtocolError::connection_from(format!("connection lost: {e}"), e)
    }
}
impl From<quinn::ConnectError> for ProtocolError {
    fn from(e: quinn::ConnectError) -> Self {
        ProtocolError::connection_from(format!("cannot connect: {e}"), e)
    }
}
impl From<quinn::WriteError> for ProtocolError {
    fn from(e: quinn::WriteError) -> Self {
        ProtocolError::connection_from(format!("write failed: {e}"), e)
    }
}
impl From<quinn::ClosedStream> for ProtocolError {
    fn from(e: quinn::ClosedStream) -> Self {
        ProtocolError::connection_from(format!("stream closed: {e}"), e)
    }
}
impl From<quinn::ReadExactError> for ProtocolError {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(n) => {
                ProtocolError::Malformed(format!("stream ended early after {n} bytes"))
            }
            quinn::ReadExactError::ReadError(e) => read_error(e),
        }
    }
}
impl From<quinn::ReadError> for ProtocolError {
    fn from(e: quinn::ReadError) -> Self {
        read_error(e)
    }
}
impl From<quinn::ReadToEndError> for ProtocolError {
    fn from(e: quinn::ReadToEndError) -> Self {
        match e {
            quinn::ReadToEndError::TooLong => ProtocolError::Malformed("response too long".into()),
            quinn::ReadToEndError::Read(e) => read_error(e),
        }
    }
}

fn read_error(e: quinn::ReadError) -> ProtocolError {
    match e {
        quinn::ReadError::Reset(code) => {
            let code = u16::try_from(code.into_inner()).map_or(ErrorCode::Internal, ErrorCode::from_u16);
            ProtocolError::Remote { code, message: "stream reset by peer".into() }
        }
        other => ProtocolError::connection_from(format!("read failed: {other}"), other),
    }
}
