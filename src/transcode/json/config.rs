//! `[json]` and `routes[].json`: the proto3 JSON mapping options.

use crate::config::{file, ConfigError, Validator};

/// What to do with a query parameter that names no field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownQueryParams {
    Reject,
    Ignore,
}

/// Proto3 JSON mapping options, global and per route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonOptions {
    /// Write fields that hold their default value.
    pub emit_unpopulated: bool,
    /// Write `proto_field_name` instead of `lowerCamelCase`.
    pub use_proto_names: bool,
    /// Write enums as numbers instead of names.
    pub enums_as_numbers: bool,
    /// Reject unknown JSON fields and enum names (the default) instead of dropping them.
    pub reject_unknown_fields: bool,
    pub unknown_query_params: UnknownQueryParams,
}

impl Default for JsonOptions {
    fn default() -> Self {
        JsonOptions {
            emit_unpopulated: false,
            use_proto_names: false,
            enums_as_numbers: false,
            reject_unknown_fields: true,
            unknown_query_params: UnknownQueryParams::Reject,
        }
    }
}

impl Validator<'_> {
    pub(crate) fn json(
        &self,
        key: &str,
        j: &file::JsonFile,
        base: JsonOptions,
    ) -> Result<JsonOptions, ConfigError> {
        let unknown_query_params = match j.unknown_query_params.as_deref() {
            None => base.unknown_query_params,
            Some("reject") => UnknownQueryParams::Reject,
            Some("ignore") => UnknownQueryParams::Ignore,
            Some(other) => {
                return Err(self.err(
                    format!("{key}.unknown_query_params"),
                    format!("{other:?} is not one of \"reject\", \"ignore\""),
                ))
            }
        };
        Ok(JsonOptions {
            emit_unpopulated: j.emit_unpopulated.unwrap_or(base.emit_unpopulated),
            use_proto_names: j.use_proto_names.unwrap_or(base.use_proto_names),
            enums_as_numbers: j.enums_as_numbers.unwrap_or(base.enums_as_numbers),
            reject_unknown_fields: j
                .reject_unknown_fields
                .unwrap_or(base.reject_unknown_fields),
            unknown_query_params,
        })
    }
}
