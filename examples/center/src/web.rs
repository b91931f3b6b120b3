//! The web console's files: `web/dist` as `npm run build` leaves it (found from this
//! package's folder at compile time, or `--web-dir`), served at `/` with tower-http.
//! Where it was not built, `/` answers a page saying how to build it.

use std::path::{Path, PathBuf};

use axum::http::StatusCode;
use axum::response::Html;
use axum::Router;
use tower_http::services::{ServeDir, ServeFile};

/// `examples/center/web/dist` of the source tree this binary was built from.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web/dist")
}

const NOT_BUILT: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>vinfra-center</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:4em auto;color:#222}
code,pre{background:#f3f3f3;padding:.2em .4em;border-radius:4px}</style></head>
<body><h1>vinfra-center</h1>
<p>The server runs, but the web console has not been built. Build it once:</p>
<pre>cd examples/center/web &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>then reload this page (or start the server with <code>--web-dir DIR</code>).
The REST API is at <a href=\"/api/openapi.json\"><code>/api/openapi.json</code></a>.</p>
</body></html>
";

/// The routes of the console's files, below the API's: unknown paths fall back to
/// `index.html` (the console routes in the browser).
pub fn router(dir: &Path) -> Router {
    let index = dir.join("index.html");
    if index.is_file() {
        Router::new().fallback_service(ServeDir::new(dir).fallback(ServeFile::new(index)))
    } else {
        tracing::warn!(dir = %dir.display(), "no web console built there");
        Router::new().fallback(|| async { (StatusCode::OK, Html(NOT_BUILT)) })
    }
}
