//! What the AWS services share on the wire: AWS JSON 1.0/1.1 helpers,
//! the Query protocol (form-encoded requests, XML answers) and SigV4.

pub(crate) mod json;
pub mod query;
pub(crate) mod shapes;
pub mod sigv4;
