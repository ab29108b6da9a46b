//! The methods of the services the gateway answers itself: gRPC health
//! (`grpc.health.v1.Health`) and server reflection (`grpc.reflection.v1`
//! and `v1alpha`). They resolve like routed methods, so every RPC protocol
//! (gRPC, gRPC-Web, Connect, WebSocket) reaches them the same way; their
//! upstream is [`UpstreamId::GATEWAY`], which the pipeline answers in
//! process before any policy.

use crate::envelope::{CallKind, Target, UpstreamId};
use http::uri::PathAndQuery;
use prost_reflect::DescriptorPool;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// The schemas of the gateway's own services, as their crates ship them.
const SCHEMAS: [&[u8]; 3] = [
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// The services, by full name.
pub const SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    use prost::Message as _;
    let mut pool = DescriptorPool::new();
    for set in SCHEMAS {
        // Compiled into the binary from the crates' own generated sets: a
        // failure here is a build that cannot work at all.
        let mut set = prost_types::FileDescriptorSet::decode(set)
            .expect("the gateway's own service schemas decode");
        // Named as grpc's own repository names them (the crates name them
        // `health.proto`...), so reflection clients asking by file name find them.
        for file in &mut set.file {
            let standard = match file.package() {
                "grpc.health.v1" => "grpc/health/v1/health.proto",
                "grpc.reflection.v1" => "grpc/reflection/v1/reflection.proto",
                "grpc.reflection.v1alpha" => "grpc/reflection/v1alpha/reflection.proto",
                _ => continue,
            };
            file.name = Some(standard.to_owned());
        }
        pool.add_file_descriptor_set(set)
            .expect("the gateway's own service schemas are whole");
    }
    pool
});

static TARGETS: LazyLock<HashMap<String, Arc<Target>>> = LazyLock::new(build);

/// The schemas of the gateway's own services.
pub fn pool() -> &'static DescriptorPool {
    &POOL
}

/// The gateway's own method at `grpc_path`, if it is one.
pub fn target(grpc_path: &str) -> Option<&'static Arc<Target>> {
    TARGETS.get(grpc_path)
}

fn build() -> HashMap<String, Arc<Target>> {
    let mut targets = HashMap::new();
    for name in SERVICES {
        let service = POOL
            .get_service_by_name(name)
            .expect("the gateway's own service schemas name their services");
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            let target = Target {
                path: PathAndQuery::from_maybe_shared(path.clone())
                    .expect("a gRPC path of a built-in service"),
                kind: CallKind::of(&method),
                upstream: UpstreamId::GATEWAY,
                route: usize::MAX,
                upstream_name: "gateway".into(),
                timeout: None,
                cacheable: false,
                access_log: false,
                idempotent: false,
                hash_field: None,
                request_json_direct: crate::transcode::json::wire::covers(&method.input()),
                request_has_maps: crate::transcode::map_order::can_hold_maps(&method.input()),
                reply_json_direct: crate::transcode::json::wire::covers(&method.output()),
                stats: Default::default(),
                method,
            };
            targets.insert(path, Arc::new(target));
        }
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_of_the_gateway_services_resolves_to_the_gateway() {
        let check = target("/grpc.health.v1.Health/Check").expect("Check");
        assert_eq!(check.kind, CallKind::Unary);
        assert_eq!(check.upstream, UpstreamId::GATEWAY);
        assert!(!check.access_log);
        let watch = target("/grpc.health.v1.Health/Watch").expect("Watch");
        assert_eq!(watch.kind, CallKind::ServerStreaming);
        for version in ["v1", "v1alpha"] {
            let info = target(&format!(
                "/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
            ))
            .expect("reflection");
            assert_eq!(info.kind, CallKind::Bidi);
        }
        assert!(target("/grpc.health.v1.Health/Nope").is_none());
    }
}
