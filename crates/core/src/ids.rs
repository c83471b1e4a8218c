//! Identifiers, each a newtype that carries its preconditions: parse once at the edge, trust inside.

use std::fmt;

use uuid::Uuid;

/// The longest user, tenant or device id accepted, in bytes.
pub const MAX_ID_LEN: usize = 256;

/// An identifier that failed its checks, naming the field it came in; it becomes
/// [`crate::Error::InvalidInput`] through `?`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct InvalidId {
    /// The field, as named on the wire.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl InvalidId {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// A session's id: a random (v4) UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(Uuid);

impl SessionId {
    /// A fresh random session id.
    pub fn generate() -> Self {
        Self(crate::random::uuid_v4())
    }

    /// Wraps an existing UUID (from storage).
    pub const fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    /// The UUID inside.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// Parses the hyphenated text form.
    ///
    /// # Errors
    /// [`InvalidId`] naming `field` when `text` is not a UUID.
    pub fn parse(text: &str, field: &'static str) -> Result<Self, InvalidId> {
        Uuid::try_parse(text)
            .map(Self)
            .map_err(|_| InvalidId::new(field, "must be a UUID"))
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

fn check_identifier(value: &str, field: &'static str) -> Result<(), InvalidId> {
    if value.is_empty() {
        return Err(InvalidId::new(field, "must not be empty"));
    }
    if value.len() > MAX_ID_LEN {
        return Err(InvalidId::new(
            field,
            format!("must be at most {MAX_ID_LEN} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(InvalidId::new(field, "must not contain control characters"));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` (non-empty, at most [`MAX_ID_LEN`] bytes, no control characters).
            ///
            /// # Errors
            /// [`InvalidId`] naming `field` when a check fails.
            pub fn parse(value: impl Into<String>, field: &'static str) -> Result<Self, InvalidId> {
                let value = value.into();
                check_identifier(&value, field)?;
                Ok(Self(value))
            }

            /// Wraps a value read back from storage, where it was checked on the way in.
            pub fn from_trusted(value: String) -> Self {
                Self(value)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// The application's id of a user; sessiond treats it as opaque.
    UserId
);
string_id!(
    /// The application's id of a tenant, for multi-tenant applications.
    TenantId
);
string_id!(
    /// A client device's id, sent by the client or generated on its first session.
    DeviceId
);

impl DeviceId {
    /// A fresh random device id, for clients that did not send one.
    pub fn generate() -> Self {
        Self(crate::random::uuid_v4().simple().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_reject_empty_long_and_control_characters() {
        assert!(UserId::parse("alice", "user_id").is_ok());
        assert!(UserId::parse("", "user_id").is_err());
        assert!(UserId::parse("a".repeat(MAX_ID_LEN + 1), "user_id").is_err());
        let error = UserId::parse("a\nb", "user_id").unwrap_err();
        assert!(error.to_string().contains("user_id"), "{error}");
    }

    #[test]
    fn session_id_round_trips_through_text() {
        let id = SessionId::generate();
        assert_eq!(SessionId::parse(&id.to_string(), "id").unwrap(), id);
        assert!(SessionId::parse("not-a-uuid", "id").is_err());
    }
}
