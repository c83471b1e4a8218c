//! Parsing helpers shared by the setting builders: comma-separated lists, durations, counts,
//! and the `Setting` wrapper that lets a message name the variable and echo its value as
//! written.

use std::time::Duration;

/// The entries of a comma-separated setting, trimmed, empty ones left out (`a, ,b,` is `a`,
/// `b`); none when the setting is absent.
pub(super) fn entries(value: Option<&str>) -> impl Iterator<Item = &str> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
}

pub(super) fn duration(
    value: Option<&str>,
    name: &str,
    default: Duration,
) -> Result<Duration, String> {
    let Some(text) = value.map(str::trim) else {
        return Ok(default);
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(text)
        .map_err(|_| format!("{name} must be a duration like 10s, 15m, 7d (got {text:?})"))
}

/// A setting's value with its variable's name and its value as the user wrote it (or the
/// default, marked so), for messages that point at what to change.
pub(super) struct Setting<T> {
    pub(super) value: T,
    pub(super) name: &'static str,
    pub(super) shown: String,
}

impl<T> std::fmt::Display for Setting<T> {
    /// `SESSIOND_IDLE_TIMEOUT (40d)`, or `SESSIOND_ABSOLUTE_TIMEOUT (30d (default))`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.shown)
    }
}

/// `value` as written, or `default` shown as `DEFAULT (default)`.
pub(super) fn shown(value: Option<&str>, default: impl FnOnce() -> String) -> String {
    match value.map(str::trim) {
        Some(text) => text.to_owned(),
        None => format!("{} (default)", default()),
    }
}

pub(super) fn duration_setting(
    value: Option<&str>,
    name: &'static str,
    default: Duration,
) -> Result<Setting<Duration>, String> {
    Ok(Setting {
        value: duration(value, name, default)?,
        name,
        shown: shown(value, || compact_duration(default)),
    })
}

/// `default`-style short form of a duration: `30d`, `15m`, `10s`, or humantime's where no
/// single unit fits.
pub(super) fn compact_duration(value: Duration) -> String {
    const UNITS: [(u64, &str); 4] = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    if value.is_zero() {
        return "0".to_owned();
    }
    if value.subsec_nanos() == 0 {
        let seconds = value.as_secs();
        for (unit, suffix) in UNITS {
            if seconds.is_multiple_of(unit) {
                return format!("{}{suffix}", seconds / unit);
            }
        }
    }
    humantime::format_duration(value).to_string()
}

/// A count setting: a whole number from 1 to `max`.
pub(super) fn count(
    value: Option<&str>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, String> {
    let Some(text) = value.map(str::trim) else {
        return Ok(default);
    };
    text.parse::<usize>()
        .ok()
        .filter(|count| (1..=max).contains(count))
        .ok_or_else(|| format!("{name} must be a whole number from 1 to {max} (got {text:?})"))
}

/// The most connections or streams a setting may allow.
pub(super) const MAX_COUNT: usize = 1_000_000;
