//! The one error type of `tessera-core`. Each variant says whose fault it is.

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, grouped by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something impossible (a tile size of 0, an unknown resampling).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A source raster could not be used: missing, not a raster, truncated, unknown band.
    #[error("{path}: {message}")]
    Source { path: String, message: String },

    /// Coordinate reference systems do not agree or cannot be used.
    #[error("crs: {0}")]
    Crs(String),

    /// Reading or writing object storage failed.
    #[error("storage {url}: {message}")]
    Storage { url: String, message: String },

    /// A layer is missing, incomplete or its metadata is not Tessera's.
    #[error("layer {url}: {message}")]
    Layer { url: String, message: String },

    /// A bug in Tessera: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn source(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Source {
            path: path.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn storage(url: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Storage {
            url: url.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn layer(url: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Layer {
            url: url.into(),
            message: message.to_string(),
        }
    }

    pub(crate) fn invalid(message: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(message.to_string())
    }
}
