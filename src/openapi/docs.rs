//! `GET /docs`: the description rendered by Swagger UI, whose files are
//! vendored under `vendor/swagger-ui/` (see its LICENSE and NOTICE) and
//! built into the binary, so the page needs nothing from the internet.
//! "Try it out" sends its requests to the gateway that served the page.

use bytes::Bytes;

/// The Swagger UI release vendored.
pub const SWAGGER_UI_VERSION: &str = "5.35.0";

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>API docs</title>
<link rel="stylesheet" href="/docs/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script>
</body>
</html>
"#;

const INIT: &str = r##"window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  tryItOutEnabled: false,
  displayRequestDuration: true,
  showExtensions: true,
});
"##;

const BUNDLE: &[u8] = include_bytes!("../../vendor/swagger-ui/swagger-ui-bundle.js");
const CSS: &[u8] = include_bytes!("../../vendor/swagger-ui/swagger-ui.css");

/// The page or one of its files, by request path.
/// Whether a `GET` of `path` is answered by the gateway itself when it
/// serves its description: `/openapi.json` or a file of the docs page.
pub fn is_page(path: &str) -> bool {
    path == "/openapi.json" || file(path).is_some()
}

pub fn file(path: &str) -> Option<(&'static str, Bytes)> {
    Some(match path {
        "/docs" | "/docs/" => (
            "text/html; charset=utf-8",
            Bytes::from_static(PAGE.as_bytes()),
        ),
        "/docs/init.js" => ("text/javascript", Bytes::from_static(INIT.as_bytes())),
        "/docs/swagger-ui-bundle.js" => ("text/javascript", Bytes::from_static(BUNDLE)),
        "/docs/swagger-ui.css" => ("text/css", Bytes::from_static(CSS)),
        _ => return None,
    })
}
