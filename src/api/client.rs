//! `GET /client.js` and `GET /client.d.ts`: the JavaScript feed client (clients/js) and its types, so a page
//! can `import { connect } from "https://HOST/client.js"` without a bundler. Both files are compiled into the
//! binary (`cargo build` needs no Node), and answered with an `ETag` so a browser revalidates cheaply and always
//! runs the client of the server it talks to.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use warp::http::{StatusCode, header};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::route::Route;

pub const ROUTES: &[Route] =
    &[Route { path: "/client.js", methods: &["GET"] }, Route { path: "/client.d.ts", methods: &["GET"] }];

const CLIENT_JS: &str = include_str!("../../clients/js/client.js");
const CLIENT_D_TS: &str = include_str!("../../clients/js/client.d.ts");

/// Both files, no token needed.
pub fn routes() -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    static JS: OnceLock<String> = OnceLock::new();
    static TYPES: OnceLock<String> = OnceLock::new();
    let js = warp::path!("client.js").and(warp::get()).and(if_none_match()).map(|seen: Option<String>| {
        file(CLIENT_JS, JS.get_or_init(|| etag(CLIENT_JS)), "text/javascript; charset=utf-8", seen)
    });
    let types = warp::path!("client.d.ts").and(warp::get()).and(if_none_match()).map(|seen: Option<String>| {
        file(CLIENT_D_TS, TYPES.get_or_init(|| etag(CLIENT_D_TS)), "application/typescript; charset=utf-8", seen)
    });
    js.or(types).unify()
}

fn if_none_match() -> impl Filter<Extract = (Option<String>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("if-none-match")
}

fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

fn file(body: &'static str, etag: &str, content_type: &'static str, seen: Option<String>) -> Response {
    let fresh = seen.is_some_and(|s| s.split(',').any(|t| t.trim().trim_start_matches("W/") == etag));
    let mut res = if fresh {
        warp::reply::with_status(warp::reply(), StatusCode::NOT_MODIFIED).into_response()
    } else {
        let mut res = Response::new(body.into());
        res.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        res
    };
    let headers = res.headers_mut();
    headers.insert(header::ETAG, header::HeaderValue::from_str(etag).expect("a hex etag"));
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    res
}
