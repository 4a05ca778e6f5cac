//! What can go wrong, and the exit code each means.

/// A command's failure.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The ledger, a queue or the configuration failed.
    #[error(transparent)]
    Tracemeter(#[from] tracemeter::Error),
    /// An argument is not valid.
    #[error("{0}")]
    Invalid(String),
    /// What the command needs does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The change was not confirmed: nothing was done.
    #[error("not confirmed: nothing was done (pass --yes to proceed)")]
    NotConfirmed,
    /// Part of the work failed (what was done is reported).
    #[error("{0}")]
    Partial(String),
    /// Reconciling found drift beyond the tolerance.
    #[error("{0}")]
    Drift(String),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Io(#[from] std::io::Error),
}

impl CliError {
    /// The process exit code: 1 failed, 2 bad usage or configuration, 3 drift, 4 not confirmed.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Tracemeter(tracemeter::Error::Config(_)) | CliError::Invalid(_) => 2,
            CliError::Drift(_) => 3,
            CliError::NotConfirmed => 4,
            _ => 1,
        }
    }
}

/// A command's result.
pub type CliResult<T = ()> = std::result::Result<T, CliError>;
