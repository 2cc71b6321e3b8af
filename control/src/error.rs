//! An AWS exception: its kind (the error code each service names it by), a
//! message, and an HTTP status (4xx for every client mistake). Every room
//! returns it; the API layer puts it on the wire (`__type` in AWS JSON,
//! an error document in the Query protocol).

/// An error answered to an API caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    /// The exception's name (`ClientException`, `ClusterNotFoundException`).
    pub kind: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// The HTTP status.
    pub status: u16,
}

impl ApiError {
    fn new(kind: &'static str, status: u16, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
            status,
        }
    }

    /// A client error with a service's own code (EC2's
    /// `InvalidGroup.NotFound`, ELB's `TargetGroupNotFound`...).
    pub fn coded(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(kind, 400, message)
    }

    /// The caller did something wrong (ECS's catch-all client error).
    pub fn client(message: impl Into<String>) -> Self {
        Self::new("ClientException", 400, message)
    }

    /// A parameter is malformed, out of range, or one skiff cannot honour.
    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new("InvalidParameterException", 400, message)
    }

    /// The request body is not what the operation takes.
    pub fn serialization(message: impl Into<String>) -> Self {
        Self::new("SerializationException", 400, message)
    }

    /// The named cluster does not exist.
    pub fn cluster_not_found() -> Self {
        Self::new("ClusterNotFoundException", 400, "Cluster not found.")
    }

    /// The cluster still holds something that must go first.
    pub fn cluster_contains(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(kind, 400, message)
    }

    /// No such operation on this endpoint.
    pub fn unknown_operation(target: &str) -> Self {
        Self::new(
            "UnknownOperationException",
            400,
            format!("unknown operation {target}"),
        )
    }

    /// A named resource (task, log group...) does not exist.
    pub fn not_found(kind: &'static str, message: impl Into<String>) -> Self {
        Self::new(kind, 400, message)
    }

    /// Credentials are missing or unknown.
    pub fn unrecognized_client(message: impl Into<String>) -> Self {
        Self::new("UnrecognizedClientException", 403, message)
    }

    /// The signature does not match.
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new("InvalidSignatureException", 403, message)
    }

    /// skiff itself failed: the only 5xx.
    pub fn server(message: impl Into<String>) -> Self {
        Self::new("ServerException", 500, message)
    }
}
