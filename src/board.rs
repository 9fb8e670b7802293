//! The live board: the web app in web/board, served at `/` by `boardcast serve` itself. Its files are compiled
//! into the binary (no build step, nothing loaded from another site); the page imports the feed client from
//! `/client.js` and talks to the REST API of the same server.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles from this origin only, no inline
//! script, no framing) and an `ETag` with `Cache-Control: no-cache`, so a browser revalidates cheaply and always
//! runs the board of the server it talks to.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

/// One file of the app: its name under `/board/`, its bytes, and its content type.
struct Asset {
    name: &'static str,
    body: &'static str,
    content_type: &'static str,
}

const INDEX: Asset = Asset {
    name: "index.html",
    body: include_str!("../web/board/index.html"),
    content_type: "text/html; charset=utf-8",
};

const ASSETS: &[Asset] = &[
    Asset { name: "app.js", body: include_str!("../web/board/app.js"), content_type: JS },
    Asset { name: "api.js", body: include_str!("../web/board/api.js"), content_type: JS },
    Asset { name: "state.js", body: include_str!("../web/board/state.js"), content_type: JS },
    Asset { name: "render.js", body: include_str!("../web/board/render.js"), content_type: JS },
    Asset { name: "board.css", body: include_str!("../web/board/board.css"), content_type: "text/css; charset=utf-8" },
    Asset { name: "icon.svg", body: include_str!("../web/board/icon.svg"), content_type: "image/svg+xml" },
];

const JS: &str = "text/javascript; charset=utf-8";

/// Scripts, styles and images from this origin only; fetches and WebSockets to this server. `ws:`/`wss:` are
/// named because older browsers do not let `'self'` cover WebSocket URLs.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self' ws: wss:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /` (the app's page) and `GET /board/<file>`; no token needed (the page signs in with one of its own).
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let index = warp::path::end()
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .map(|seen: Option<String>| answer(&INDEX, seen));
    let asset = warp::path!("board" / String)
        .and(warp::get())
        .and(warp::header::optional::<String>("if-none-match"))
        .and_then(|name: String, seen: Option<String>| async move {
            match ASSETS.iter().find(|a| a.name == name) {
                Some(asset) => Ok(answer(asset, seen)),
                None => Err(warp::reject::not_found()),
            }
        });
    index.or(asset).unify()
}

fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        std::iter::once(&INDEX)
            .chain(ASSETS)
            .map(|a| {
                let digest = Sha256::digest(a.body.as_bytes());
                format!("\"{}\"", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>())
            })
            .collect()
    });
    let i = std::iter::once(&INDEX).chain(ASSETS).position(|a| a.name == asset.name).expect("a known asset");
    &tags[i]
}

fn answer(asset: &Asset, seen: Option<String>) -> Response {
    let tag = etag(asset);
    let fresh = seen.is_some_and(|s| s.split(',').any(|t| t.trim().trim_start_matches("W/") == tag));
    let mut res = if fresh {
        warp::reply::with_status(warp::reply(), StatusCode::NOT_MODIFIED).into_response()
    } else {
        let mut res = Response::new(asset.body.into());
        res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
        res
    };
    let headers = res.headers_mut();
    headers.insert(header::ETAG, HeaderValue::from_static(tag));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}
