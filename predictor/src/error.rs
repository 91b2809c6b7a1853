//! The predictor's error type.

/// Errors training, saving or loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A file that is not a ferry predictor model.
    #[error("{0}: not a ferry predictor model: {1}")]
    Format(String, String),
    /// Training could not finish.
    #[error("training failed: {0}")]
    Train(String),
    /// A model kind or name this build does not know.
    #[error("{0}")]
    Unsupported(String),
}
