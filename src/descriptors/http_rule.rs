//! Reads the `google.api.http` option of a method. The option is decoded
//! from the method's raw options bytes, so it is found whether or not the
//! pool resolved the extension when the file was added.

use prost::Message;
use prost_reflect::MethodDescriptor;

/// The generated google.api types (HttpRule, CustomHttpPattern, HttpBody).
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
}

pub use pb::{http_rule::Pattern, HttpRule};

/// google.protobuf.MethodOptions, reduced to the one extension we read.
#[derive(Clone, PartialEq, Message)]
struct MethodOptionsHttp {
    #[prost(message, optional, tag = "72295728")]
    http: Option<HttpRule>,
}

/// The method's HTTP rule, if it has one.
pub fn of(method: &MethodDescriptor) -> Option<HttpRule> {
    let bytes = method.options().encode_to_vec();
    MethodOptionsHttp::decode(bytes.as_slice())
        .ok()
        .and_then(|o| o.http)
}
