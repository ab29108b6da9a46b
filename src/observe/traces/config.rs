//! `[tracing]` and the standard `OTEL_*` environment variables: whether
//! spans are exported, where, how, and which are sampled. The config file
//! wins over the environment; the environment fills what it leaves out.

use crate::config::{file, ConfigError, Validator};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

/// Which traces are kept: the OpenTelemetry sampler names.
#[derive(Debug, Clone, PartialEq)]
pub enum SamplerConfig {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// The collector: for gRPC its base URL, for HTTP the full traces URL.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    pub service_name: String,
    /// Resource attributes besides `service.name`.
    pub resource: Vec<(String, String)>,
    pub sampler: SamplerConfig,
    /// Spans waiting for export; past it new ones are dropped (and counted).
    pub queue_size: usize,
    pub batch_size: usize,
    pub export_timeout: Duration,
}

/// Reads the environment; a seam so tests can pass their own.
pub trait Environment {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process's environment.
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Validator<'_> {
    /// `None`: tracing is off (no `[tracing]` and no OTLP endpoint in the
    /// environment, `enabled = false`, or `OTEL_SDK_DISABLED=true`).
    pub(crate) fn tracing(
        &self,
        t: Option<&file::TracingFile>,
        env: &dyn Environment,
    ) -> Result<Option<TracingConfig>, ConfigError> {
        let env_err =
            |name: &str, reason: String| self.err(format!("{name} (environment)"), reason);
        let disabled = match t.and_then(|t| t.enabled) {
            Some(enabled) => !enabled,
            None => env
                .var("OTEL_SDK_DISABLED")
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        };
        if disabled {
            return Ok(None);
        }
        let protocol = match t.and_then(|t| t.protocol.clone()) {
            Some(p) => parse_protocol(&p)
                .ok_or_else(|| self.err("tracing.protocol", protocol_reason(&p)))?,
            None => match env
                .var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                .map(|p| ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", p))
                .or_else(|| {
                    env.var("OTEL_EXPORTER_OTLP_PROTOCOL")
                        .map(|p| ("OTEL_EXPORTER_OTLP_PROTOCOL", p))
                }) {
                Some((name, p)) => {
                    parse_protocol(&p).ok_or_else(|| env_err(name, protocol_reason(&p)))?
                }
                None => OtlpProtocol::HttpProtobuf,
            },
        };
        // A signal's own endpoint is used as written; the general one gets
        // the signal's path for HTTP (the OTLP exporter specification).
        // Errors quote the value as written, not with the path added.
        let endpoint = match t.and_then(|t| t.endpoint.clone()) {
            Some(e) => Some(("tracing.endpoint".to_owned(), e.clone(), e)),
            None => env
                .var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .map(|e| {
                    (
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (environment)".to_owned(),
                        e.clone(),
                        e,
                    )
                })
                .or_else(|| {
                    env.var("OTEL_EXPORTER_OTLP_ENDPOINT").map(|written| {
                        let e = match protocol {
                            OtlpProtocol::HttpProtobuf => {
                                format!("{}/v1/traces", written.trim_end_matches('/'))
                            }
                            OtlpProtocol::Grpc => written.clone(),
                        };
                        (
                            "OTEL_EXPORTER_OTLP_ENDPOINT (environment)".to_owned(),
                            e,
                            written,
                        )
                    })
                }),
        };
        let Some((endpoint_key, endpoint, written)) = endpoint else {
            if t.is_some() {
                return Err(self.err(
                    "tracing.endpoint",
                    "is required (or OTEL_EXPORTER_OTLP_ENDPOINT in the environment): where the OTLP collector listens",
                ));
            }
            return Ok(None);
        };
        let uri: http::Uri = endpoint.parse().map_err(|e| {
            self.err(
                endpoint_key.clone(),
                format!("{written:?} is not a URL: {e}"),
            )
        })?;
        if uri.scheme_str() == Some("https") {
            return Err(self.err(
                endpoint_key,
                format!(
                    "{written:?}: export over TLS is not supported; send spans to a collector or agent over http:// (on the same host or network)"
                ),
            ));
        }
        if uri.scheme_str() != Some("http") || uri.authority().is_none() {
            return Err(self.err(
                endpoint_key,
                format!("{written:?} is not an http:// URL with a host"),
            ));
        }

        let mut resource: Vec<(String, String)> = Vec::new();
        if let Some(attrs) = env.var("OTEL_RESOURCE_ATTRIBUTES") {
            for pair in attrs.split(',').filter(|p| !p.trim().is_empty()) {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(env_err(
                        "OTEL_RESOURCE_ATTRIBUTES",
                        format!("{pair:?} is not key=value"),
                    ));
                };
                let (k, v) = (k.trim(), v.trim());
                for part in [k, v] {
                    crate::ingress::edge::path::check_escapes(part).map_err(|why| {
                        env_err(
                            "OTEL_RESOURCE_ATTRIBUTES",
                            format!("{part:?} in {pair:?} {why}"),
                        )
                    })?;
                }
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8_lossy()
                        .trim()
                        .to_owned()
                };
                let key = decode(k);
                if key.is_empty() {
                    return Err(env_err(
                        "OTEL_RESOURCE_ATTRIBUTES",
                        format!("{pair:?} has an empty key"),
                    ));
                }
                set(&mut resource, key, decode(v));
            }
        }
        if let Some(t) = t {
            for (k, v) in &t.resource_attributes {
                if k.trim().is_empty() {
                    return Err(self.err(
                        "tracing.resource_attributes",
                        "has an empty key: an attribute is named (OpenTelemetry requires a non-empty key)",
                    ));
                }
                set(&mut resource, k.trim().to_owned(), v.clone());
            }
        }
        let from_attrs = resource
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| resource.remove(i).1);
        // The file before the environment, as for every setting: its
        // `resource_attributes."service.name"` is its service name too.
        let in_file_attrs = t.and_then(|t| {
            t.resource_attributes
                .iter()
                .find(|(k, _)| k.as_str() == "service.name")
                .map(|(_, v)| v.clone())
        });
        if t.and_then(|t| t.service_name.as_deref()) == Some("") {
            return Err(self.err(
                "tracing.service_name",
                "is empty; leave it out for the default (OTEL_SERVICE_NAME, or \"portico\")",
            ));
        }
        let service_name = t
            .and_then(|t| t.service_name.clone())
            .or(in_file_attrs)
            .or_else(|| env.var("OTEL_SERVICE_NAME"))
            .or(from_attrs)
            .unwrap_or_else(|| "portico".to_owned());

        let (sampler_name, sampler_key) = match t.and_then(|t| t.sampler.clone()) {
            Some(s) => (s, "tracing.sampler".to_owned()),
            None => match env.var("OTEL_TRACES_SAMPLER") {
                Some(s) => (s, "OTEL_TRACES_SAMPLER (environment)".to_owned()),
                None => ("parentbased_always_on".to_owned(), String::new()),
            },
        };
        let arg = match t.and_then(|t| t.sampler_arg) {
            Some(a) => Some((a, "tracing.sampler_arg".to_owned())),
            None => match env.var("OTEL_TRACES_SAMPLER_ARG") {
                Some(a) if sampler_name.trim().ends_with("traceidratio") => Some((
                    a.trim().parse::<f64>().map_err(|_| {
                        env_err(
                            "OTEL_TRACES_SAMPLER_ARG",
                            format!("{a:?} is not a number between 0 and 1"),
                        )
                    })?,
                    "OTEL_TRACES_SAMPLER_ARG (environment)".to_owned(),
                )),
                _ => None,
            },
        };
        // Only the ratio samplers read the argument.
        let takes_arg = sampler_name.trim().ends_with("traceidratio");
        let ratio = match arg {
            Some((a, key)) if takes_arg && !(0.0..=1.0).contains(&a) => {
                return Err(self.err(key, format!("{a} is not a ratio between 0 and 1")))
            }
            Some((a, _)) => a,
            None => 1.0,
        };
        let sampler = match sampler_name.trim() {
            "always_on" => SamplerConfig::AlwaysOn,
            "always_off" => SamplerConfig::AlwaysOff,
            "traceidratio" => SamplerConfig::Ratio(ratio),
            "parentbased_always_on" => SamplerConfig::ParentBasedAlwaysOn,
            "parentbased_always_off" => SamplerConfig::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => SamplerConfig::ParentBasedRatio(ratio),
            other => {
                return Err(self.err(
                    sampler_key,
                    format!(
                        "{other:?} is not a sampler: always_on, always_off, traceidratio, \
                         parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                    ),
                ))
            }
        };
        let queue_size = t.and_then(|t| t.queue_size).unwrap_or(2048);
        // Unset, a batch is at most the queue: a small queue alone is fine.
        let batch_size = t
            .and_then(|t| t.batch_size)
            .unwrap_or(512.min(queue_size.max(1)));
        if queue_size == 0 {
            return Err(self.err("tracing.queue_size", "must be greater than zero"));
        }
        // The queue is a channel of that many spans: past this it would
        // hold more memory than any collector outage is worth.
        if queue_size > 1 << 20 {
            return Err(self.err(
                "tracing.queue_size",
                format!("{queue_size} is over the most allowed, 1048576"),
            ));
        }
        if batch_size == 0 || batch_size > queue_size {
            return Err(self.err(
                "tracing.batch_size",
                format!("must be between 1 and queue_size ({queue_size})"),
            ));
        }
        Ok(Some(TracingConfig {
            endpoint,
            protocol,
            service_name,
            resource,
            sampler,
            queue_size,
            batch_size,
            export_timeout: self.duration(
                "tracing.export_timeout",
                &t.and_then(|t| t.export_timeout.clone()),
                Duration::from_secs(10),
            )?,
        }))
    }
}

fn set(attrs: &mut Vec<(String, String)>, k: String, v: String) {
    match attrs.iter_mut().find(|(name, _)| *name == k) {
        Some(slot) => slot.1 = v,
        None => attrs.push((k, v)),
    }
}

fn parse_protocol(p: &str) -> Option<OtlpProtocol> {
    match p.trim() {
        "grpc" => Some(OtlpProtocol::Grpc),
        "http/protobuf" => Some(OtlpProtocol::HttpProtobuf),
        _ => None,
    }
}

fn protocol_reason(p: &str) -> String {
    format!("{p:?} is not an OTLP protocol Portico exports: \"grpc\" or \"http/protobuf\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Env(HashMap<&'static str, &'static str>);

    impl Environment for Env {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|v| v.to_string())
        }
    }

    fn resolve(
        file: Option<&str>,
        env: &[(&'static str, &'static str)],
    ) -> Result<Option<TracingConfig>, ConfigError> {
        let parsed: Option<file::TracingFile> = file.map(|f| toml::from_str(f).unwrap());
        Validator::for_tests("portico.toml")
            .tracing(parsed.as_ref(), &Env(env.iter().copied().collect()))
    }

    #[test]
    fn the_general_endpoint_alone_turns_export_on_with_a_parent_based_sampler() {
        let t = resolve(
            None,
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")],
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(t.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(t.sampler, SamplerConfig::ParentBasedAlwaysOn);
        assert_eq!(t.service_name, "portico");
        let grpc = resolve(
            None,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(grpc.endpoint, "http://collector:4317");
        assert_eq!(grpc.protocol, OtlpProtocol::Grpc);
        assert_eq!(resolve(None, &[]).unwrap(), None, "nothing set: off");
    }

    #[test]
    fn an_empty_service_name_is_refused_rather_than_exported() {
        let err = resolve(
            Some("endpoint = \"http://collector:4318\"\nservice_name = \"\""),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.key, "tracing.service_name", "{err}");
    }

    #[test]
    fn the_environment_names_the_sampler_service_and_resource_and_the_file_wins() {
        let env = [
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://traces:4318/custom",
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=from-attrs",
            ),
        ];
        let t = resolve(None, &env).unwrap().unwrap();
        assert_eq!(
            t.endpoint, "http://traces:4318/custom",
            "a signal's own endpoint is used as written"
        );
        assert_eq!(t.sampler, SamplerConfig::ParentBasedRatio(0.25));
        assert_eq!(t.service_name, "from-attrs");
        assert_eq!(
            t.resource,
            [("deployment.environment".to_owned(), "prod".to_owned())]
        );
        let mut with_name = env.to_vec();
        with_name.push(("OTEL_SERVICE_NAME", "edge"));
        assert_eq!(
            resolve(None, &with_name).unwrap().unwrap().service_name,
            "edge"
        );
        let file = resolve(
            Some("endpoint = \"http://file:4317\"\nprotocol = \"grpc\"\nsampler = \"always_off\"\nservice_name = \"gw\""),
            &with_name,
        )
        .unwrap()
        .unwrap();
        assert_eq!(file.endpoint, "http://file:4317");
        assert_eq!(file.sampler, SamplerConfig::AlwaysOff);
        assert_eq!(file.service_name, "gw");
        // The file's resource attributes name the service before the
        // environment does.
        let file = resolve(
            Some("endpoint = \"http://file:4317\"\nresource_attributes = { \"service.name\" = \"from-file\" }"),
            &with_name,
        )
        .unwrap()
        .unwrap();
        assert_eq!(file.service_name, "from-file");
        assert!(file.resource.iter().all(|(k, _)| k != "service.name"));
    }

    #[test]
    fn disabled_means_off_whatever_else_is_set() {
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ];
        assert_eq!(resolve(None, &env).unwrap(), None);
        assert_eq!(
            resolve(Some("enabled = false\nendpoint = \"http://c:4317\""), &[]).unwrap(),
            None
        );
        // The file's own word wins over the environment's.
        let on = resolve(Some("enabled = true"), &env).unwrap().unwrap();
        assert_eq!(on.endpoint, "http://collector:4318/v1/traces");
    }

    #[test]
    fn bad_settings_name_their_key_or_variable() {
        for (file, env, key) in [
            (Some(""), vec![], "tracing.endpoint"),
            (
                Some("endpoint = \"collector:4317\""),
                vec![],
                "tracing.endpoint",
            ),
            (
                Some("endpoint = \"https://collector:4317\""),
                vec![],
                "tracing.endpoint",
            ),
            (
                Some("endpoint = \"http://c\"\nprotocol = \"http/json\""),
                vec![],
                "tracing.protocol",
            ),
            (
                Some("endpoint = \"http://c\"\nsampler = \"sometimes\""),
                vec![],
                "tracing.sampler",
            ),
            (
                Some("endpoint = \"http://c\"\nsampler = \"traceidratio\"\nsampler_arg = 2.0"),
                vec![],
                "tracing.sampler_arg",
            ),
            (
                None,
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_SAMPLER", "nope"),
                ],
                "OTEL_TRACES_SAMPLER (environment)",
            ),
            (
                None,
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "half"),
                ],
                "OTEL_TRACES_SAMPLER_ARG (environment)",
            ),
            (
                None,
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "udp"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL (environment)",
            ),
            (
                Some("endpoint = \"http://c\"\nqueue_size = 8\nbatch_size = 9"),
                vec![],
                "tracing.batch_size",
            ),
            (
                Some("endpoint = \"http://c\"\nresource_attributes = { \"\" = \"x\" }"),
                vec![],
                "tracing.resource_attributes",
            ),
        ] {
            let err = resolve(file, &env).unwrap_err();
            assert_eq!(err.key, key, "{file:?} {env:?}: {err}");
        }
    }

    #[test]
    fn resource_attributes_need_a_key_and_well_formed_escapes() {
        for (attrs, says) in [
            ("=x", "empty key"),
            (" =x,a=1", "empty key"),
            ("%20=x", "empty key"),
            ("b=%ZZ", "malformed percent-escape"),
            ("b%2=1", "malformed percent-escape"),
            ("b=%FF", "do not decode to UTF-8"),
        ] {
            let env = [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
                ("OTEL_RESOURCE_ATTRIBUTES", attrs),
            ];
            let err = resolve(None, &env).unwrap_err();
            assert_eq!(
                err.key, "OTEL_RESOURCE_ATTRIBUTES (environment)",
                "{attrs}: {err}"
            );
            assert!(err.to_string().contains(says), "{attrs}: {err}");
        }
    }

    #[test]
    fn a_small_queue_alone_takes_batches_of_its_size() {
        let t = resolve(Some("endpoint = \"http://c\"\nqueue_size = 8"), &[])
            .unwrap()
            .unwrap();
        assert_eq!((t.queue_size, t.batch_size), (8, 8));
    }

    #[test]
    fn a_bad_endpoint_is_quoted_as_written() {
        for written in ["https://127.0.0.1:4318", "not a url"] {
            let err = resolve(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", written)]).unwrap_err();
            let said = err.to_string();
            assert!(said.contains(&format!("{written:?}")), "{said}");
            assert!(!said.contains("/v1/traces"), "{said}");
        }
    }
}
