//! Pure conversions between client formats and protobuf: JSON <-> message,
//! path and query values -> fields, errors -> JSON bodies, stream framing.
//! No I/O happens here, so everything is unit-testable and shared by every
//! ingress adapter.

pub mod fields;
pub mod framing;
pub mod json;
pub mod map_order;
pub mod outbound;
pub mod request;
pub mod response;
pub mod status;
pub mod stream;

#[cfg(test)]
mod tests;
