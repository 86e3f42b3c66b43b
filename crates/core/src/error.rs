//! The one error type of `tessera-core`. Each variant says whose fault it is, and the variants
//! that wrap another library's failure keep it as their [`std::error::Error::source`].

/// A `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The failure of another library that an [`Error`] wraps.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, grouped by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something impossible (a tile size of 0, an unknown resampling).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A source raster could not be used: missing, not a raster, truncated, unknown band.
    #[error("{path}: {message}")]
    Source {
        path: String,
        message: String,
        #[source]
        cause: Option<Cause>,
    },

    /// Coordinate reference systems do not agree or cannot be used.
    #[error("crs: {0}")]
    Crs(String),

    /// Reading or writing object storage failed. `fault` says whether trying again can help.
    #[error("storage {url}: {message}")]
    Storage {
        url: String,
        message: String,
        fault: StorageFault,
        #[source]
        cause: Option<Cause>,
    },

    /// A layer is missing, incomplete or its metadata is not Tessera's.
    #[error("layer {url}: {message}")]
    Layer {
        url: String,
        message: String,
        #[source]
        cause: Option<Cause>,
    },

    /// A bug in Tessera: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Whether a storage failure may pass if the same request is made again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageFault {
    /// Throttling, a 5xx answer, a timeout, a dropped connection: retried with backoff.
    Transient,
    /// Access denied, bad credentials, a missing bucket, a bad URL: the same request fails the
    /// same way, so the task fails at once as a configuration or input fault.
    Permanent,
}

impl Error {
    pub(crate) fn source(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Source {
            path: path.into(),
            message: message.to_string(),
            cause: None,
        }
    }

    /// A storage failure that trying again may cure (the default for a message without a cause).
    pub(crate) fn storage(url: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Storage {
            url: url.into(),
            message: message.to_string(),
            fault: StorageFault::Transient,
            cause: None,
        }
    }

    /// A storage failure that the same request would meet again: a bad URL, a refused write.
    pub fn storage_permanent(url: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Storage {
            url: url.into(),
            message: message.to_string(),
            fault: StorageFault::Permanent,
            cause: None,
        }
    }

    /// A storage failure with its cause, classified by it: an `object_store` error anywhere in
    /// the chain decides (see [`fault_of`]); anything else is transient.
    pub(crate) fn storage_caused(
        url: impl Into<String>,
        message: impl std::fmt::Display,
        cause: impl Into<Cause>,
    ) -> Self {
        let cause = cause.into();
        Error::Storage {
            url: url.into(),
            message: message.to_string(),
            fault: fault_of(cause.as_ref()),
            cause: Some(cause),
        }
    }

    /// The same error with `what` was being done put before its message ("cannot write tile
    /// (3, 4) of band_1: access denied"); its kind, fault and cause are kept.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        match self {
            Error::Source {
                path,
                message,
                cause,
            } => Error::Source {
                path,
                message: format!("{what}: {message}"),
                cause,
            },
            Error::Storage {
                url,
                message,
                fault,
                cause,
            } => Error::Storage {
                url,
                message: format!("{what}: {message}"),
                fault,
                cause,
            },
            Error::Layer {
                url,
                message,
                cause,
            } => Error::Layer {
                url,
                message: format!("{what}: {message}"),
                cause,
            },
            other => other,
        }
    }

    pub(crate) fn layer(url: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Error::Layer {
            url: url.into(),
            message: message.to_string(),
            cause: None,
        }
    }

    pub(crate) fn invalid(message: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(message.to_string())
    }

    /// Whether running the same task again may succeed: storage faults that are transient and
    /// internal errors; never bad input or a permanent storage fault.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Storage { fault, .. } => *fault == StorageFault::Transient,
            Error::Internal(_) => true,
            _ => false,
        }
    }
}

/// Whether a failure below a storage call is worth retrying: the first `object_store` error in
/// the chain decides — denied, unauthenticated, missing, a bad path or an unsupported call are
/// permanent, as are HTTP 4xx answers but 408 (timeout) and 429 (throttled); everything else
/// (5xx, timeouts, dropped connections, errors of other libraries) is transient.
pub fn fault_of(e: &(dyn std::error::Error + 'static)) -> StorageFault {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(os) = e.downcast_ref::<object_store::Error>() {
            return object_store_fault(os);
        }
        next = e.source();
    }
    StorageFault::Transient
}

fn object_store_fault(e: &object_store::Error) -> StorageFault {
    use object_store::Error as E;
    match e {
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => StorageFault::Permanent,
        E::Generic { source, .. } => match http_status(source.as_ref()) {
            Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => StorageFault::Permanent,
            _ => StorageFault::Transient,
        },
        _ => StorageFault::Transient,
    }
}

/// The HTTP status an `object_store` client error reports, read from its message ("... Client
/// error with status 400 Bad Request ..." / "Server returned non-2xx status code: 400").
fn http_status(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut next = Some(e);
    while let Some(e) = next {
        let text = e.to_string();
        for marker in ["with status ", "status code: "] {
            if let Some(rest) = text.split(marker).nth(1) {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(s) = digits.parse() {
                    return Some(s);
                }
            }
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_store_errors_are_classified_and_kept_as_the_cause() {
        let denied = object_store::Error::PermissionDenied {
            path: "b/k".into(),
            source: "403 Forbidden".into(),
        };
        let e = Error::storage_caused("s3://b/k", "access denied", denied);
        assert!(!e.is_transient());
        let cause = std::error::Error::source(&e).expect("the cause is kept");
        assert!(cause.to_string().contains("b/k"), "{cause}");

        let generic = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 503 Service Unavailable".into(),
        };
        assert!(Error::storage_caused("s3://b/k", "slow", generic).is_transient());
        let bad_request = object_store::Error::Generic {
            store: "S3",
            source: "Client error with status 400 Bad Request: x".into(),
        };
        assert!(!Error::storage_caused("s3://b/k", "bad", bad_request).is_transient());
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        assert!(Error::storage_caused("s3://b/k", "reset", io).is_transient());
    }
}
