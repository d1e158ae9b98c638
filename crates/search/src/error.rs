use minference_core::CoreError;
use minference_model::ModelError;
use thiserror::Error;

/// Every way a search, a calibration prompt or a picture can fail.
#[derive(Debug, Error)]
pub enum SearchError {
    #[error(transparent)]
    Core(#[from] CoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Picture(#[from] minference_picture::PictureError),
}

impl SearchError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        SearchError::Io { path: path.display().to_string(), source }
    }
}

pub type Result<T> = std::result::Result<T, SearchError>;
