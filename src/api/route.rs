//! Routing in code: each resource declares its [`Route`]s (path template and methods) next to its warp
//! filters, and [`unrouted`] answers the requests none of them takes from those declarations: 405 with
//! `Allow` on a known path, 404 elsewhere. The OpenAPI document describes the same routes; a test holds the
//! two together.

use std::convert::Infallible;

use deadpool_postgres::Pool;
use warp::http::Method;
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::http::ApiError;

/// A path template, as the OpenAPI document writes it (`/api/tasks/{task_id}`), and the methods routed on it.
pub struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
}

impl Route {
    /// Whether a request path (`/api/tasks/123`) is an instance of this template: a `{name}` stands for any
    /// one segment that is not empty.
    fn matches(&self, path: &str) -> bool {
        let template = self.path.split('/');
        let segments = path.trim_end_matches('/').split('/');
        template.clone().count() == segments.clone().count()
            && template.zip(segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s)
    }
}

/// The template of the route a request path is an instance of, if any: a label for metrics that names no id.
pub fn template_of(routes: &[&[Route]], path: &str) -> Option<&'static str> {
    routes.iter().flat_map(|r| r.iter()).find(|r| r.matches(path)).map(|r| r.path)
}

/// The connection pool, for a handler.
pub fn with_pool(pool: Pool) -> impl Filter<Extract = (Pool,), Error = Infallible> + Clone {
    warp::any().map(move || pool.clone())
}

/// The methods routed on a request path, in the order `Allow` lists them; none for an unknown path.
fn methods_of(routes: &[&[Route]], path: &str) -> Vec<&'static str> {
    let Some(route) = routes.iter().flat_map(|r| r.iter()).find(|r| r.matches(path)) else { return vec![] };
    ["GET", "POST", "PUT", "PATCH", "DELETE"].into_iter().filter(|m| route.methods.contains(m)).collect()
}

/// The fallback after every route filter, for the paths the API serves (it is mounted under `/api` and the
/// client's paths only). Rejects, never answers: a custom rejection combined after a route's
/// own (say, a 401) loses to it, and wins over warp's generic 404/405. So a route's error always stands, and
/// an unrouted request gets 405 with the methods of a known path, else 404.
pub fn unrouted(routes: &'static [&'static [Route]]) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path::full().and(warp::method()).and_then(move |path: FullPath, method: Method| {
        async move {
            let methods = methods_of(routes, path.as_str());
            if methods.contains(&method.as_str()) {
                // A route took this request and refused it (a bad header or query): its rejection stands.
                return Err(warp::reject::not_found());
            }
            let e = if methods.is_empty() {
                ApiError::NotFound("no such route".into())
            } else {
                ApiError::MethodNotAllowed { allow: methods.join(", ") }
            };
            Err::<Response, _>(warp::reject::custom(e))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_matches_its_instances_only() {
        let r = Route { path: "/api/tasks/{task_id}", methods: &["GET"] };
        assert!(r.matches("/api/tasks/123"));
        assert!(r.matches("/api/tasks/123/"));
        assert!(!r.matches("/api/tasks/"));
        assert!(!r.matches("/api/tasks/123/comments"));
        assert!(!r.matches("/api/projects/123"));
    }
}
