//! `[access_log]`: where the one line per call goes, in which format, and
//! which share of successful calls is written.

use crate::config::{file, ConfigError, Validator};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line.
    Json,
    /// One human-readable line, for development.
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub format: Format,
    /// A file appended to; `None`: standard output.
    pub path: Option<PathBuf>,
    /// The share of successful calls logged (failed ones always are).
    pub sample: f64,
}

impl Validator<'_> {
    pub(crate) fn access_log(
        &self,
        a: &file::AccessLogFile,
    ) -> Result<AccessLogConfig, ConfigError> {
        let format = match a.format.as_deref() {
            None | Some("json") => Format::Json,
            Some("text") => Format::Text,
            Some(other) => {
                return Err(self.err(
                    "access_log.format",
                    format!("{other:?} is not a format: \"json\" or \"text\""),
                ))
            }
        };
        let sample = a.sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample) {
            return Err(self.err(
                "access_log.sample",
                format!("{sample} is not a share of calls between 0.0 and 1.0"),
            ));
        }
        let path = match a.path.as_deref() {
            None | Some("-") | Some("stdout") => None,
            Some("") => {
                return Err(self.err(
                    "access_log.path",
                    "is empty; leave it out for standard output",
                ))
            }
            Some(p) => Some(self.output_path(p)),
        };
        Ok(AccessLogConfig {
            format,
            path,
            sample,
        })
    }
}
