//! The sections of BENCHMARKS.md that a scenario writes by itself (`--report`) and every other run keeps: found
//! between their start and end markers, replaced in place, or added before the reference figures.

/// The section between `markers` (both included), if `existing` has one.
pub fn kept(existing: &str, markers: (&str, &str)) -> Option<String> {
    let start = existing.find(markers.0)?;
    let end = existing[start..].find(markers.1)? + start + markers.1.len();
    Some(existing[start..end].to_string())
}

/// `existing` with the section between `markers` replaced by `section` (or, if it has none, with `section`
/// added before the reference figures).
pub fn with_section(existing: &str, markers: (&str, &str), section: &str) -> String {
    if let Some(old) = kept(existing, markers) {
        return existing.replacen(&old, section, 1);
    }
    match existing.find("## Reference") {
        Some(i) => format!("{}{section}\n\n{}", &existing[..i], &existing[i..]),
        None => format!("{}\n\n{section}\n", existing.trim_end()),
    }
}
