//! Registry errors, and their form on the wire: the OCI error codes with
//! `{"errors":[{"code":...,"message":...,"detail":...}]}` and the status each
//! code calls for. A client's mistake is always a 4xx.

use http::StatusCode;

/// The OCI distribution spec's error codes (plus the ECR-flavoured ones the
/// registry adds, which reuse `DENIED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// blob unknown to registry
    BlobUnknown,
    /// blob upload invalid
    BlobUploadInvalid,
    /// blob upload unknown to registry
    BlobUploadUnknown,
    /// provided digest did not match uploaded content
    DigestInvalid,
    /// manifest references a manifest or blob unknown to registry
    ManifestBlobUnknown,
    /// manifest invalid
    ManifestInvalid,
    /// manifest unknown to registry
    ManifestUnknown,
    /// invalid repository name
    NameInvalid,
    /// repository name not known to registry
    NameUnknown,
    /// provided length did not match content length
    SizeInvalid,
    /// authentication required
    Unauthorized,
    /// requested access to the resource is denied
    Denied,
    /// the operation is unsupported
    Unsupported,
    /// too many requests
    TooManyRequests,
    /// a `Range` with no byte in the blob (distribution's code for 416)
    RangeInvalid,
}

impl Code {
    /// The code's identifier on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::RangeInvalid => "RANGE_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::TooManyRequests => "TOOMANYREQUESTS",
        }
    }

    /// The status the code goes with, as the reference registry sends it.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestBlobUnknown
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Code::RangeInvalid => StatusCode::RANGE_NOT_SATISFIABLE,
        }
    }
}

/// An error answered to a client: a code, a message, and the status (which
/// defaults to the code's own, and is overridden for the few cases the spec
/// pins, such as 413 and 416).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code_name.unwrap_or(code.as_str()))]
pub struct Error {
    /// The OCI code.
    pub code: Code,
    /// The code's name on the wire when it is not an OCI one (ECR answers
    /// an immutable tag with `TAG_INVALID`).
    pub code_name: Option<&'static str>,
    /// What went wrong, for people.
    pub message: String,
    /// The HTTP status.
    pub status: StatusCode,
    /// Optional structured detail.
    pub detail: Option<serde_json::Value>,
    /// The `WWW-Authenticate` challenge of a 401.
    pub challenge: Option<String>,
}

impl Error {
    /// An error with the code's usual status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Error {
            code,
            code_name: None,
            message: message.into(),
            status: code.status(),
            detail: None,
            challenge: None,
        }
    }

    /// The same error with another status.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The same error under another code name on the wire.
    pub fn with_code_name(mut self, name: &'static str) -> Self {
        self.code_name = Some(name);
        self
    }

    /// The same error with a `WWW-Authenticate` challenge.
    pub fn with_challenge(mut self, challenge: String) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// The same error with a detail object.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> String {
        let mut entry = serde_json::json!({
            "code": self.code_name.unwrap_or(self.code.as_str()),
            "message": self.message,
        });
        if let Some(detail) = &self.detail {
            entry["detail"] = detail.clone();
        }
        serde_json::json!({ "errors": [entry] }).to_string()
    }
}

/// A failure of the registry itself (disk, database): a 500, never a
/// client's fault, logged in full and answered without internals.
#[derive(Debug, thiserror::Error)]
pub enum Internal {
    /// An I/O error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A metadata store error.
    #[error("metadata store: {0}")]
    Db(#[from] rusqlite::Error),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// What a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The client's request cannot be served: answered as is.
    #[error(transparent)]
    Client(#[from] Error),
    /// The registry failed.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Internal(Internal::Io(e))
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Internal(Internal::Db(e))
    }
}

/// Shorthand for a handler result.
pub type Result<T, E = Failure> = std::result::Result<T, E>;
