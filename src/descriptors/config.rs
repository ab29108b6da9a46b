//! `[descriptors]`: where schemas come from.

use crate::config::{file, ConfigError, UpstreamConfig, UpstreamProtocol, Validator};
use std::path::PathBuf;

/// Where schemas come from; paths are already resolved against the config folder.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DescriptorSources {
    pub sets: Vec<PathBuf>,
    pub proto_paths: Vec<PathBuf>,
    pub protos: Vec<String>,
    /// Upstreams (by name) whose server reflection is read at startup.
    pub reflect: Vec<String>,
}

impl Validator<'_> {
    /// A `protos` entry as the compiler takes it: a name inside an include
    /// folder. An entry written as a path to the file (through an include
    /// folder, or absolute) is resolved against the config's folder, as
    /// every path is, and turned into that name; so the working directory
    /// never matters.
    fn proto_name(
        &self,
        key: &str,
        entry: &str,
        proto_paths: &[PathBuf],
    ) -> Result<String, ConfigError> {
        let relative = std::path::Path::new(entry).is_relative();
        if relative && proto_paths.iter().any(|p| p.join(entry).is_file()) {
            return Ok(entry.to_owned());
        }
        let name = crate::descriptors::name_inside(&self.output_path(entry), proto_paths)
            .map_err(|why| self.err(key, format!("{entry}: {why}")))?;
        Ok(name.unwrap_or_else(|| entry.to_owned()))
    }

    pub(crate) fn descriptors(
        &self,
        d: &file::DescriptorsFile,
        upstreams: &[UpstreamConfig],
    ) -> Result<DescriptorSources, ConfigError> {
        let proto_paths: Vec<PathBuf> = d.proto_paths.iter().map(|s| self.path(s)).collect();
        let descriptors = DescriptorSources {
            sets: d.sets.iter().map(|s| self.path(s)).collect(),
            protos: d
                .protos
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    self.proto_name(&format!("descriptors.protos[{i}]"), name, &proto_paths)
                })
                .collect::<Result<_, _>>()?,
            proto_paths,
            reflect: d.reflect.clone(),
        };
        for (i, name) in descriptors.reflect.iter().enumerate() {
            let u = self.upstream_index(&format!("descriptors.reflect[{i}]"), name, upstreams)?;
            if upstreams[u].protocol != UpstreamProtocol::Grpc {
                return Err(self.err(
                    format!("descriptors.reflect[{i}]"),
                    format!("upstream {name} speaks HTTP, not gRPC reflection"),
                ));
            }
        }
        // A folder that is not there would only show as "not in any include
        // path" for every .proto: named here instead.
        for (i, path) in descriptors.proto_paths.iter().enumerate() {
            if !path.is_dir() {
                let why = if path.exists() {
                    "is not a folder"
                } else {
                    "does not exist"
                };
                return Err(self.err(
                    format!("descriptors.proto_paths[{i}]"),
                    format!("{}: {why}", path.display()),
                ));
            }
        }
        if !descriptors.protos.is_empty() && descriptors.proto_paths.is_empty() {
            return Err(self.err(
                "descriptors.proto_paths",
                "is needed to find descriptors.protos",
            ));
        }
        Ok(descriptors)
    }
}
