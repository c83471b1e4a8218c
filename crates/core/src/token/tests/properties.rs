//! Property tests of token parsing: whatever a client presents (arbitrary text, arbitrary
//! bytes under a valid signature, registered claims of any type, custom claims nested to any
//! depth), validation answers with a [`TokenError`] or a token whose claims decode, and never
//! panics; refresh tokens parse only in their one shape.
//!
//! Each property runs as [`crate::proptesting`] says.

use proptest::prelude::*;

use super::*;
use crate::error::{Error, RefreshRejection};
use crate::proptesting::check;
use crate::refresh::RefreshToken;

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |number| {
            serde_json::Number::from_f64(number).map(Value::Number)
        }),
        ".{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// JSON text a `Value` cannot hold or that parsers treat specially: numbers past `i64`,
/// fractions, exponents, negative zero, arrays nested up to 300 deep.
fn raw_json_text() -> impl Strategy<Value = String> {
    prop_oneof![
        json_value().prop_map(|value| value.to_string()),
        Just("9223372036854775808".to_owned()),
        Just("-9223372036854775809".to_owned()),
        Just("18446744073709551616".to_owned()),
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("1.5".to_owned()),
        Just("1700000000.0".to_owned()),
        Just("-0".to_owned()),
        Just("1E2".to_owned()),
        (0usize..300).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth))),
        (0usize..300).prop_map(|depth| format!(
            "{}{}",
            "{\"a\":".repeat(depth) + "1",
            "}".repeat(depth)
        )),
    ]
}

/// The fixture's claims as JSON text with `name` set to the raw JSON `value`.
fn claims_text_with(fixture: &Fixture, name: &str, value: &str) -> String {
    let mut claims = fixture.claims();
    claims[name] = json!("\u{1}placeholder\u{1}");
    claims
        .to_string()
        .replace("\"\\u0001placeholder\\u0001\"", value)
}

/// How deep arrays and objects nest in well-formed JSON text; `usize::MAX` when it does not
/// decode into a `Value` at all (a number out of range, deeper than serde_json goes).
fn text_depth(text: &str) -> usize {
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) => return usize::MAX,
    };
    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    depth(&value)
}

/// An accepted token's claims must decode and agree with what validation returned.
fn accepted_token_decodes(token: &str, validated: &ValidatedToken) -> Result<(), TestCaseError> {
    let claims = decode_claims(token);
    prop_assert!(claims.is_ok(), "accepted but undecodable: {claims:?}");
    let claims = claims.unwrap_or_default();
    prop_assert_eq!(claims["sub"].as_str(), Some(validated.user_id.as_str()));
    prop_assert_eq!(claims["exp"].as_i64(), Some(validated.expires_at_seconds));
    Ok(())
}

#[test]
fn arbitrary_text_is_refused_as_a_token_without_panicking() {
    let fixtures = fixtures();
    let text = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_.=+/-]{0,400}",
        (
            prop::collection::vec(any::<u8>(), 0..200),
            prop::collection::vec(any::<u8>(), 0..400),
            prop::collection::vec(any::<u8>(), 0..600),
        )
            .prop_map(|(header, payload, signature)| {
                format!("{}.{}.{}", b64(&header), b64(&payload), b64(&signature))
            }),
    ];
    check((0..fixtures.len(), text), |(which, token)| {
        let fixture = &fixtures[which];
        prop_assert!(fixture.validate(&token).is_err());
        Ok(())
    });
}

/// The header of a forged token.
#[derive(Debug, Clone)]
enum HeaderCase {
    /// The one sessiond writes.
    Right,
    /// The right one with `alg`, `typ` or `kid` replaced by any JSON value.
    Replaced(&'static str, Value),
    /// Any bytes.
    Raw(Vec<u8>),
}

fn bytes_or_json() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..600),
        json_value().prop_map(|value| value.to_string().into_bytes()),
    ]
}

#[test]
fn validly_signed_arbitrary_headers_and_payloads_are_refused_or_decode() {
    let fixtures = fixtures();
    let header = prop_oneof![
        Just(HeaderCase::Right),
        (
            prop::sample::select(vec!["alg", "typ", "kid"]),
            json_value()
        )
            .prop_map(|(name, value)| HeaderCase::Replaced(name, value)),
        bytes_or_json().prop_map(HeaderCase::Raw),
    ];
    check(
        (0..fixtures.len(), header, bytes_or_json()),
        |(which, header, payload)| {
            let fixture = &fixtures[which];
            let header = match header {
                HeaderCase::Right => fixture.header().to_string().into_bytes(),
                HeaderCase::Replaced(name, value) => {
                    let mut header = fixture.header();
                    header[name] = value;
                    header.to_string().into_bytes()
                }
                HeaderCase::Raw(bytes) => bytes,
            };
            let token = fixture.forge_raw(&header, &payload);
            match fixture.validate(&token) {
                Ok(validated) => accepted_token_decodes(&token, &validated)?,
                // A correct signature is never called bad.
                Err(error) => prop_assert_ne!(error, TokenError::BadSignature),
            }
            Ok(())
        },
    );
}

#[test]
fn registered_claims_of_any_type_or_size_are_refused_unless_well_typed() {
    let fixtures = fixtures();
    let names = prop::sample::select(vec!["iss", "sub", "aud", "exp", "iat", "nbf", "sid"]);
    check(
        (0..fixtures.len(), names, raw_json_text()),
        |(which, name, value)| {
            let fixture = &fixtures[which];
            let payload = claims_text_with(fixture, name, &value);
            let token =
                fixture.forge_raw(fixture.header().to_string().as_bytes(), payload.as_bytes());
            match fixture.validate(&token) {
                Ok(validated) => {
                    accepted_token_decodes(&token, &validated)?;
                    let parsed: Option<Value> = serde_json::from_str(&value).ok();
                    let well_typed = match name {
                        "exp" | "iat" | "nbf" => serde_json::from_str::<i64>(&value).is_ok(),
                        "aud" => parsed.as_ref().is_some_and(|aud| {
                            aud.is_string()
                                || aud
                                    .as_array()
                                    .is_some_and(|all| all.iter().all(Value::is_string))
                        }),
                        _ => parsed.as_ref().is_some_and(Value::is_string),
                    };
                    prop_assert!(well_typed, "{name} = {value} accepted");
                }
                Err(error) => prop_assert!(
                    matches!(
                        error,
                        TokenError::Malformed
                            | TokenError::Expired
                            | TokenError::NotYetValid
                            | TokenError::WrongIssuer
                            | TokenError::WrongAudience
                    ),
                    "{name} = {value}: {error:?}"
                ),
            }
            Ok(())
        },
    );
}

#[test]
fn custom_claims_validate_exactly_when_they_nest_within_the_limit() {
    let fixtures = fixtures();
    check((0..fixtures.len(), raw_json_text()), |(which, value)| {
        let fixture = &fixtures[which];
        let payload = claims_text_with(fixture, "custom", &value);
        let token = fixture.forge_raw(fixture.header().to_string().as_bytes(), payload.as_bytes());
        // The claims object is one level, around the custom claim's own; a claim that does
        // not decode at all counts as too deep.
        let depth = text_depth(&value).saturating_add(1);
        match fixture.validate(&token) {
            Ok(validated) => {
                prop_assert!(depth <= MAX_CLAIMS_DEPTH, "{depth} deep accepted");
                accepted_token_decodes(&token, &validated)?;
            }
            Err(error) => {
                prop_assert!(depth > MAX_CLAIMS_DEPTH, "{depth} deep refused: {error:?}");
                prop_assert_eq!(error, TokenError::Malformed);
            }
        }
        Ok(())
    });
}

#[test]
fn refresh_tokens_parse_only_in_their_two_shapes() {
    let presented = prop_oneof![
        any::<String>(),
        ".{0,70}".prop_map(|rest| format!("sdr_{rest}")),
        "[A-Za-z0-9_-]{40,46}".prop_map(|rest| format!("sdr_{rest}")),
        "[A-Za-z0-9_-]{56,62}".prop_map(|rest| format!("sdr_{rest}")),
        Just(
            RefreshToken::generate(Timestamp::from_unix_millis(1_700_000_000_000))
                .expose()
                .to_owned()
        ),
    ];
    check(presented, |presented| {
        // 43 characters: minted before locators; 59: a locator and 32 random bytes.
        let well_formed = (presented.len() == 47 || presented.len() == 63)
            && presented.starts_with("sdr_")
            && presented[4..]
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
        match RefreshToken::parse(&presented) {
            Ok(token) => {
                prop_assert!(well_formed, "{presented:?} accepted");
                prop_assert_eq!(token.expose(), presented.as_str());
            }
            Err(error) => {
                prop_assert!(!well_formed, "{presented:?} refused");
                prop_assert!(matches!(
                    error,
                    Error::RefreshRejected(RefreshRejection::Unknown)
                ));
            }
        }
        Ok(())
    });
}

#[test]
fn arbitrary_sealed_successors_fail_to_open_without_panicking() {
    let token = RefreshToken::generate(Timestamp::from_unix_millis(1_700_000_000_000));
    check(prop::collection::vec(any::<u8>(), 0..300), |sealed| {
        prop_assert!(matches!(
            token.open_successor(&sealed),
            Err(Error::Corrupt(_))
        ));
        Ok(())
    });
}
