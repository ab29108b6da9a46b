//! `[openapi]`: whether the main port serves the description and the docs
//! page, and the `info` the description carries.

use crate::config::{file, ConfigError, Validator};

#[derive(Debug, Clone, PartialEq)]
pub struct OpenApiConfig {
    /// Serve `GET /openapi.json` and `GET /docs` on the main port (the
    /// admin port always serves `/openapi.json`).
    pub serve: bool,
    pub title: String,
    /// `None`: the generation's digest, so the version changes with the API.
    pub version: Option<String>,
    pub description: Option<String>,
}

impl Default for OpenApiConfig {
    fn default() -> Self {
        OpenApiConfig {
            serve: true,
            title: "Portico".to_owned(),
            version: None,
            description: None,
        }
    }
}

impl Validator<'_> {
    pub(crate) fn openapi(
        &self,
        o: Option<&file::OpenApiFile>,
    ) -> Result<OpenApiConfig, ConfigError> {
        let Some(o) = o else {
            return Ok(OpenApiConfig::default());
        };
        for (key, value) in [("title", &o.title), ("version", &o.version)] {
            if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err(self.err(
                    format!("openapi.{key}"),
                    "is empty; leave it out for the default",
                ));
            }
        }
        Ok(OpenApiConfig {
            serve: o.serve.unwrap_or(true),
            title: o.title.clone().unwrap_or_else(|| "Portico".to_owned()),
            version: o.version.clone(),
            description: o.description.clone(),
        })
    }
}
