//! Device recognition from what the client sends: an id, a name and its user agent.

use crate::error::Error;
use crate::ids::{DeviceId, UserId};
use crate::session::{Device, DeviceType};
use crate::time::Timestamp;

/// The longest device name or user agent kept, in bytes.
pub const MAX_DEVICE_TEXT: usize = 1024;

/// A device in a user's registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// Whose device it is; a device id means nothing outside its user.
    pub user_id: UserId,
    /// The device as last seen (its `trusted` is the registry's).
    pub device: Device,
    /// The user agent it last sent.
    pub user_agent: Option<String>,
    /// The address it last came from.
    pub last_ip: Option<String>,
    /// When a session was first created from it.
    pub first_seen_at: Timestamp,
    /// The latest activity of any of its sessions.
    pub last_seen_at: Timestamp,
    /// The encrypted columns (named as in [`crate::crypt::columns`]) whose stored value did not
    /// open when the device was read: their fields read as absent.
    pub unreadable: Vec<&'static str>,
}

/// Builds the device of a new session: keeps the client's id or mints one, and parses the
/// user agent into browser, operating system and device type.
///
/// # Errors
/// [`Error::InvalidInput`] when a field is too long or contains control characters.
pub fn recognise(
    id: Option<String>,
    name: Option<String>,
    user_agent: Option<&str>,
) -> Result<Device, Error> {
    let id = match id {
        Some(id) => DeviceId::parse(id, "device.id")?,
        None => DeviceId::generate(),
    };
    let name = name
        .map(|name| check_text(name, "device.name"))
        .transpose()?;
    let (device_type, browser, os) =
        user_agent
            .map(parse_user_agent)
            .unwrap_or((DeviceType::Unknown, None, None));
    Ok(Device {
        id,
        name,
        device_type,
        browser,
        os,
        trusted: false,
    })
}

/// Checks free text sent by a client: bounded length, no control characters.
///
/// # Errors
/// [`Error::InvalidInput`] naming `field`.
pub fn check_text(text: String, field: &'static str) -> Result<String, Error> {
    if text.len() > MAX_DEVICE_TEXT {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_DEVICE_TEXT} bytes"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(text)
}

/// The browser family and operating system a user agent names, as [`recognise`] records them
/// on a device (`None` where the parser cannot tell). Only the first [`MAX_DEVICE_TEXT`] bytes
/// are looked at.
pub fn browser_and_os(user_agent: &str) -> (Option<String>, Option<String>) {
    let mut end = user_agent.len().min(MAX_DEVICE_TEXT);
    while !user_agent.is_char_boundary(end) {
        end -= 1;
    }
    let (_, browser, os) = parse_user_agent(&user_agent[..end]);
    (browser, os)
}

fn parse_user_agent(user_agent: &str) -> (DeviceType, Option<String>, Option<String>) {
    let Some(parsed) = woothee::parser::Parser::new().parse(user_agent) else {
        return (DeviceType::Unknown, None, None);
    };
    let known = |value: &str| (!value.is_empty() && value != "UNKNOWN").then(|| value.to_owned());
    let tablet = parsed.os == "iPad"
        || user_agent.contains("Tablet")
        || (parsed.os == "Android" && !user_agent.contains("Mobile"));
    let device_type = match parsed.category {
        "crawler" => DeviceType::Bot,
        "smartphone" | "mobilephone" if tablet => DeviceType::Tablet,
        "smartphone" | "mobilephone" => DeviceType::Mobile,
        "pc" => DeviceType::Desktop,
        _ => DeviceType::Unknown,
    };
    (device_type, known(parsed.name), known(parsed.os))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIREFOX_LINUX: &str =
        "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0";
    const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const SAFARI_IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    const GOOGLEBOT: &str =
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

    #[test]
    fn user_agents_are_parsed_into_browser_os_and_type() {
        let desktop = recognise(None, None, Some(FIREFOX_LINUX)).unwrap();
        assert_eq!(desktop.device_type, DeviceType::Desktop);
        assert_eq!(desktop.browser.as_deref(), Some("Firefox"));
        assert_eq!(desktop.os.as_deref(), Some("Linux"));

        let phone = recognise(None, None, Some(SAFARI_IPHONE)).unwrap();
        assert_eq!(phone.device_type, DeviceType::Mobile);
        assert_eq!(phone.browser.as_deref(), Some("Safari"));

        let tablet = recognise(None, None, Some(SAFARI_IPAD)).unwrap();
        assert_eq!(tablet.device_type, DeviceType::Tablet);

        let bot = recognise(None, None, Some(GOOGLEBOT)).unwrap();
        assert_eq!(bot.device_type, DeviceType::Bot);

        let junk = recognise(None, None, Some("<img src=x onerror=alert(1)>")).unwrap();
        assert_eq!(junk.device_type, DeviceType::Unknown);
    }

    #[test]
    fn a_missing_device_id_is_generated_and_a_given_one_kept() {
        let first = recognise(None, None, None).unwrap();
        let second = recognise(None, None, None).unwrap();
        assert_ne!(first.id, second.id);
        let kept = recognise(Some("my-phone".into()), Some("Phone".into()), None).unwrap();
        assert_eq!(kept.id.as_str(), "my-phone");
        assert_eq!(kept.name.as_deref(), Some("Phone"));
    }

    #[test]
    fn overlong_or_control_text_is_refused_with_the_field_named() {
        let error = recognise(None, Some("x".repeat(MAX_DEVICE_TEXT + 1)), None).unwrap_err();
        assert!(error.to_string().contains("device.name"));
        assert!(recognise(Some("a\0b".into()), None, None).is_err());
    }
}
