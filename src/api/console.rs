//! The web console: static HTML, JavaScript and CSS compiled into the binary and served
//! without a token (they hold no data; every request the page makes carries the token).

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/console.js");
const STYLE: &str = include_str!("../../web/console.css");
const CALL_PAGE: &str = include_str!("../../web/call.html");
const CALL_SCRIPT: &str = include_str!("../../web/call.js");

/// The console's routes: `/`, `/console.js`, `/console.css`, and the page that calls a
/// dialplan number from the browser, `/call/{number}` with `/call.js`.
pub fn routes() -> Router {
    Router::new()
        .route(
            "/call/{number}",
            get(|| async { file("text/html; charset=utf-8", CALL_PAGE) }),
        )
        .route(
            "/call.js",
            get(|| async { file("text/javascript; charset=utf-8", CALL_SCRIPT) }),
        )
        .route(
            "/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route(
            "/console.js",
            get(|| async { file("text/javascript; charset=utf-8", SCRIPT) }),
        )
        .route(
            "/console.css",
            get(|| async { file("text/css; charset=utf-8", STYLE) }),
        )
}

fn file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
}
