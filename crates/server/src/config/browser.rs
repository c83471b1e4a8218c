//! Browsers: cookie mode, the CORS origins and the web UI's `frame-ancestors`.

use super::values::entries;
use super::*;

/// The origins of `SESSIOND_CORS_ORIGINS`: each `http(s)://host[:port]` exactly as a browser
/// sends it in `Origin` (no path, no trailing slash). A wildcard is refused: CORS answers
/// carry credentials, and browsers refuse `*` with credentials anyway.
fn cors_origins(value: Option<&str>) -> Result<Vec<String>, String> {
    let mut origins = Vec::new();
    for origin in entries(value) {
        let host = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let well_formed = host.is_some_and(|host| {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        });
        if !well_formed {
            return Err(format!(
                "SESSIOND_CORS_ORIGINS must list origins like https://app.example.com, \
                 without path or wildcard (got {origin:?})"
            ));
        }
        origins.push(origin.to_ascii_lowercase());
    }
    Ok(origins)
}

/// The `frame-ancestors` sources of `SESSIOND_UI_FRAME_ANCESTORS`: `'none'` when unset, else
/// `'none'`, `'self'` or origins, separated by spaces. Anything that could end the directive
/// and start another (`;`, `,`, quotes other than the two keywords) is refused.
fn ui_frame_ancestors(value: Option<&str>) -> Result<String, String> {
    let value = value.map(str::trim).filter(|value| !value.is_empty());
    let Some(value) = value else {
        return Ok("'none'".to_owned());
    };
    let sources: Vec<&str> = value.split_ascii_whitespace().collect();
    let well_formed = sources.iter().all(|source| {
        matches!(*source, "'none'" | "'self'")
            || (source.starts_with("https://") || source.starts_with("http://"))
                && source
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:/[]*".contains(&b))
    });
    if !well_formed || (sources.len() > 1 && sources.contains(&"'none'")) {
        return Err(format!(
            "SESSIOND_UI_FRAME_ANCESTORS must be 'none', 'self' or origins like \
             https://app.example.com separated by spaces (got {value:?})"
        ));
    }
    Ok(sources.join(" "))
}

/// What browsers are offered.
pub(super) struct BrowserSettings {
    pub(super) cookie_mode: bool,
    pub(super) cors_origins: Vec<String>,
    pub(super) ui_frame_ancestors: String,
}

/// `SESSIOND_COOKIE_MODE`, `SESSIOND_CORS_ORIGINS` and `SESSIOND_UI_FRAME_ANCESTORS`.
pub(super) fn settings(raw: &RawConfig) -> Result<BrowserSettings, String> {
    let cookie_mode = match raw.cookie_mode.as_deref().map(str::trim) {
        None | Some("off") => false,
        Some("on") => true,
        Some(other) => {
            return Err(format!(
                "SESSIOND_COOKIE_MODE must be on or off (got {other:?})"
            ));
        }
    };
    Ok(BrowserSettings {
        cookie_mode,
        cors_origins: cors_origins(raw.cors_origins.as_deref())?,
        ui_frame_ancestors: ui_frame_ancestors(raw.ui_frame_ancestors.as_deref())?,
    })
}
