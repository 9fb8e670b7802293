//! Which web pages may use the server from a browser: `BOARDCAST_CORS_ORIGINS` (`None`: any).

/// Whether a request that carries `origin` (its `Origin` header) may proceed. A request without one is not
/// from a browser page (browsers always send it on a WebSocket handshake) and may. Origins are compared as
/// browsers serialize them, but for the case of the scheme and host, which they lowercase anyway.
pub fn allowed(origins: Option<&[String]>, origin: Option<&str>) -> bool {
    match (origins, origin) {
        (None, _) | (_, None) => true,
        (Some(list), Some(origin)) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn only_a_listed_origin_or_none_passes_a_restricted_list() {
        let list = vec!["https://board.example.com".to_string(), "http://localhost:5173".to_string()];
        assert!(allowed(None, Some("https://evil.example")));
        assert!(allowed(Some(&list), None));
        assert!(allowed(Some(&list), Some("https://board.example.com")));
        assert!(allowed(Some(&list), Some("HTTPS://Board.Example.com")));
        for bad in ["https://evil.example", "http://board.example.com", "https://board.example.com:8443", "null"] {
            assert!(!allowed(Some(&list), Some(bad)), "{bad}");
        }
    }
}
