//! The Wycheproof test vectors (C2SP/wycheproof, `testvectors_v1`, vendored with their licence
//! in `testdata/wycheproof`) for every primitive sessiond uses, each run through the code that
//! sessiond runs: signatures through [`Verifier::verify`] (what token validation calls, with
//! keys parsed as the JWK Set reader parses them), HMAC and AES-GCM through
//! [`crate::primitives`], and the JWS vectors through the JWS layer of the access-token
//! validator. `cargo test wycheproof` runs them.
//!
//! Where sessiond is deliberately stricter than a vector's label, the test says so and checks
//! that the backend itself agrees with the label, so that the difference is sessiond's rule and
//! not a bug: an ES256 signature with a high S is refused (see [`Verifier::verify`]), an HMAC
//! tag shorter than 32 bytes is refused (a JWS carries the whole tag), and a JWS algorithm that
//! sessiond does not implement (RS384, PS256, ES512, ...) is refused.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::keys::{
    KeyLookup, Keyring, RsaPublicKey, SigningAlgorithm, StoredKey, VerificationKeys, Verifier,
};
use super::validate::verify_compact;
use crate::primitives::{Aes256Gcm, HmacSha256};
use crate::time::Timestamp;

fn vectors(name: &str) -> Value {
    let path = format!("{}/testdata/wycheproof/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"));
    serde_json::from_str(&text).unwrap()
}

fn hex(value: &Value) -> Vec<u8> {
    let text = value.as_str().unwrap();
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Every test of every group, with its group.
fn tests(set: &Value) -> impl Iterator<Item = (&Value, &Value)> {
    set["testGroups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| {
            group["tests"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |test| (group, test))
        })
}

/// How many vectors ran, and the answers that differ from the label on purpose.
#[derive(Default, Debug)]
struct Tally {
    checked: usize,
    stricter: usize,
}

impl Tally {
    /// Checks `accepted` against the vector's label: `valid` must be accepted, `invalid`
    /// refused, `acceptable` may go either way.
    fn expect(&mut self, test: &Value, accepted: bool) {
        let id = &test["tcId"];
        match test["result"].as_str().unwrap() {
            "valid" => assert!(accepted, "tcId {id} ({}) is valid", test["comment"]),
            "invalid" => assert!(!accepted, "tcId {id} ({}) is invalid", test["comment"]),
            "acceptable" => {}
            other => panic!("tcId {id}: unknown result {other}"),
        }
        self.checked += 1;
    }
}

#[test]
fn wycheproof_ed25519_vectors_answer_as_labelled() {
    let set = vectors("ed25519_test.json");
    let mut tally = Tally::default();
    for (group, test) in tests(&set) {
        let public: [u8; 32] = hex(&group["publicKey"]["pk"]).try_into().unwrap();
        let verifier = Verifier::ed25519(public).unwrap();
        tally.expect(
            test,
            verifier.verify(&hex(&test["msg"]), &hex(&test["sig"])),
        );
    }
    assert_eq!(
        tally.checked,
        set["numberOfTests"].as_u64().unwrap() as usize
    );
}

/// Whether `signature` (`R || S`) has S above n/2.
fn high_s(signature: &[u8]) -> bool {
    const HALF_ORDER: &str = "7fffffff800000007fffffffffffffffde737d56d38bcf4279dce5617e3192a8";
    signature.len() == 64 && signature[32..] > hex(&json!(HALF_ORDER))[..]
}

#[test]
fn wycheproof_ecdsa_p256_sha256_p1363_vectors_answer_as_labelled_with_low_s_only() {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    let set = vectors("ecdsa_secp256r1_sha256_p1363_test.json");
    let mut tally = Tally::default();
    for (group, test) in tests(&set) {
        let point = hex(&group["publicKey"]["uncompressed"]);
        let verifier = Verifier::p256(point.clone().try_into().unwrap()).unwrap();
        let (message, signature) = (hex(&test["msg"]), hex(&test["sig"]));
        let accepted = verifier.verify(&message, &signature);
        if test["result"] == "valid" && high_s(&signature) {
            // The backend takes it; sessiond's rule refuses the high-S twin, and the low twin
            // that sessiond would have produced verifies.
            assert!(!accepted, "tcId {}: a high S is refused", test["tcId"]);
            let backend = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point);
            assert!(backend.verify(&message, &signature).is_ok());
            let mut twin = signature.clone();
            super::keys::normalize_p256_s(&mut twin);
            assert!(!high_s(&twin));
            assert!(verifier.verify(&message, &twin), "tcId {}", test["tcId"]);
            tally.stricter += 1;
            tally.checked += 1;
            continue;
        }
        tally.expect(test, accepted);
    }
    assert_eq!(
        tally.checked,
        set["numberOfTests"].as_u64().unwrap() as usize
    );
    assert!(tally.stricter > 0, "the set has valid high-S signatures");
}

#[test]
fn wycheproof_rsa_pkcs1_2048_sha256_vectors_answer_as_labelled() {
    let set = vectors("rsa_signature_2048_sha256_test.json");
    let mut tally = Tally::default();
    for (group, test) in tests(&set) {
        let strip = |bytes: Vec<u8>| bytes.into_iter().skip_while(|&b| b == 0).collect();
        let public = RsaPublicKey {
            n: strip(hex(&group["publicKey"]["modulus"])),
            e: strip(hex(&group["publicKey"]["publicExponent"])),
        };
        // The JWK Set reader's path: the same checks, then the same parsed key.
        let jwks = json!({"keys": [{
            "kty": "RSA", "kid": "k",
            "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e),
        }]});
        let keys = VerificationKeys::from_public_jwks(&jwks).unwrap();
        let verifier = &keys.find("k").unwrap().verifier;
        tally.expect(
            test,
            verifier.verify(&hex(&test["msg"]), &hex(&test["sig"])),
        );
    }
    assert_eq!(
        tally.checked,
        set["numberOfTests"].as_u64().unwrap() as usize
    );
}

#[test]
fn wycheproof_hmac_sha256_vectors_answer_as_labelled_for_whole_tags() {
    let set = vectors("hmac_sha256_test.json");
    let mut tally = Tally::default();
    for (group, test) in tests(&set) {
        let key = HmacSha256::new(&hex(&test["key"]));
        let (message, tag) = (hex(&test["msg"]), hex(&test["tag"]));
        let accepted = key.verify(&message, &tag);
        if group["tagSize"].as_u64() != Some(256) {
            // A truncated tag never verifies; the backend's full tag starts with it when the
            // vector is valid.
            assert!(
                !accepted,
                "tcId {}: a truncated tag is refused",
                test["tcId"]
            );
            let full = key.sign(&message);
            assert_eq!(
                full.starts_with(&tag),
                test["result"] == "valid",
                "tcId {}",
                test["tcId"]
            );
            tally.stricter += 1;
            tally.checked += 1;
            continue;
        }
        tally.expect(test, accepted);
    }
    assert_eq!(
        tally.checked,
        set["numberOfTests"].as_u64().unwrap() as usize
    );
}

#[test]
fn wycheproof_aes_256_gcm_vectors_answer_as_labelled() {
    let set = vectors("aes_gcm_test.json");
    let mut tally = Tally::default();
    for (group, test) in tests(&set) {
        // sessiond uses AES-256 with 96-bit nonces and 128-bit tags only; its API takes nothing
        // else.
        if group["keySize"].as_u64() != Some(256)
            || group["ivSize"].as_u64() != Some(96)
            || group["tagSize"].as_u64() != Some(128)
        {
            continue;
        }
        let key: [u8; 32] = hex(&test["key"]).try_into().unwrap();
        let nonce: [u8; 12] = hex(&test["iv"]).try_into().unwrap();
        let cipher = Aes256Gcm::new(&key);
        let (aad, message) = (hex(&test["aad"]), hex(&test["msg"]));
        let mut sealed = hex(&test["ct"]);
        sealed.extend_from_slice(&hex(&test["tag"]));
        let opened = cipher.open(&nonce, &aad, &sealed);
        tally.expect(test, opened.as_deref() == Some(&message));
        if test["result"] == "valid" {
            let mut ours = Vec::new();
            cipher.seal_into(&nonce, &aad, &message, &mut ours);
            assert_eq!(ours, sealed, "tcId {}", test["tcId"]);
        }
    }
    assert!(tally.checked > 50, "{tally:?}");
}

/// The key set a JWS test group stands for, as sessiond would hold it: a JWK Set of its public
/// key, or, for an HMAC key, a keyring of its secret. `None` when sessiond does not implement
/// the key's algorithm.
fn jws_keys(group: &Value) -> Option<Box<dyn KeyLookup>> {
    let private = &group["private"];
    if private["kty"] == "oct" {
        if private["alg"] != "HS256" {
            return None;
        }
        let secret = URL_SAFE_NO_PAD.decode(private["k"].as_str()?).ok()?;
        let key = StoredKey {
            kid: private["kid"].as_str()?.to_owned(),
            algorithm: SigningAlgorithm::Hs256,
            secret: Zeroizing::new(secret),
            created_at: Timestamp::from_unix_millis(0),
            signs_from: Timestamp::from_unix_millis(0),
            deactivated_at: None,
        };
        return Some(Box::new(
            Keyring::from_stored(&[key], SigningAlgorithm::Hs256).unwrap(),
        ));
    }
    let public = &group["public"];
    let supported = match public["alg"].as_str() {
        None => true,
        Some(alg) => SigningAlgorithm::from_jose_name(alg).is_some(),
    };
    if !supported {
        return None;
    }
    Some(Box::new(
        VerificationKeys::from_public_jwks(&json!({ "keys": [public] })).unwrap(),
    ))
}

/// Two vectors whose label cannot be met by any implementation of RFC 7515: a character that
/// is not base64url is inserted into the header or the payload, the MAC is left as it was,
/// and the result says `valid`. The MAC is computed over the characters as they are sent, so
/// it cannot verify; sessiond refuses both, as every strict JWS library does.
const MISLABELLED_VALID_JWS: [u64; 2] = [372, 373];
/// Two vectors labelled `invalid` ("invalidBase64Padding", "invalidBase64PaddingInPayload")
/// whose token is, in this version of the file, byte for byte the `valid` token of tcId 357:
/// the padding they were about is gone. The same input cannot answer both ways; sessiond
/// accepts them as it accepts tcId 357.
const MISLABELLED_INVALID_JWS: [u64; 2] = [367, 370];
const SAME_AS_MISLABELLED_INVALID: u64 = 357;

#[test]
fn wycheproof_json_web_signature_vectors_answer_as_labelled_through_the_jws_layer() {
    let set = vectors("json_web_signature_test.json");
    let mut tally = Tally::default();
    let mut unsupported = 0;
    for (group, test) in tests(&set) {
        let Some(token) = test["jws"].as_str() else {
            // JSON serialization: sessiond reads compact tokens only, so it is never accepted.
            assert_eq!(test["result"], "invalid", "tcId {}", test["tcId"]);
            tally.checked += 1;
            continue;
        };
        let accepted = match jws_keys(group) {
            Some(keys) => verify_compact(token, keys.as_ref(), None, |_| Ok(())).is_ok(),
            None => {
                // An algorithm sessiond does not implement: the JWK Set reader skips its key,
                // and its tokens are refused whatever the label.
                let public = json!({ "keys": [&group["public"]] });
                let keys = VerificationKeys::from_public_jwks(&public).unwrap();
                assert!(keys.is_empty(), "tcId {}", test["tcId"]);
                assert!(verify_compact(token, &keys, None, |_| Ok(())).is_err());
                unsupported += 1;
                continue;
            }
        };
        let id = test["tcId"].as_u64().unwrap();
        if test["result"] == "valid" && group["public"]["alg"] == "ES256" {
            let (signing_input, signature) = token.rsplit_once('.').unwrap();
            let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
            if high_s(&signature) {
                // sessiond's low-S rule refuses it; the backend alone takes it.
                assert!(!accepted, "tcId {id}: a high S is refused");
                assert_es256_backend_accepts(&group["public"], signing_input, &signature);
                tally.stricter += 1;
                tally.checked += 1;
                continue;
            }
        }
        if MISLABELLED_INVALID_JWS.contains(&id) {
            let (_, original) = tests(&set)
                .find(|(_, test)| test["tcId"] == SAME_AS_MISLABELLED_INVALID)
                .unwrap();
            assert_eq!(test["jws"], original["jws"], "tcId {id}");
            assert!(accepted, "tcId {id}");
            tally.stricter += 1;
            tally.checked += 1;
            continue;
        }
        if MISLABELLED_VALID_JWS.contains(&id) {
            assert!(!accepted, "tcId {id}");
            tally.stricter += 1;
            tally.checked += 1;
            continue;
        }
        tally.expect(test, accepted);
    }
    assert_eq!(
        tally.checked + unsupported,
        set["numberOfTests"].as_u64().unwrap() as usize
    );
    assert!(tally.checked > 300, "{tally:?}, {unsupported} unsupported");
}

/// Checks that AWS-LC alone verifies a high-S ES256 `signature` under the JWK `public`, and
/// that sessiond takes the low twin of the same signature.
fn assert_es256_backend_accepts(public: &Value, signing_input: &str, signature: &[u8]) {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    let member = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(public[name].as_str().unwrap())
            .unwrap()
    };
    let mut point = [4u8; 65];
    point[1..33].copy_from_slice(&member("x"));
    point[33..].copy_from_slice(&member("y"));
    let backend = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point);
    assert!(backend.verify(signing_input.as_bytes(), signature).is_ok());
    let mut twin = signature.to_vec();
    super::keys::normalize_p256_s(&mut twin);
    let verifier = Verifier::p256(point).unwrap();
    assert!(!verifier.verify(signing_input.as_bytes(), signature));
    assert!(verifier.verify(signing_input.as_bytes(), &twin));
}

/// A JWS of RFC 7515, 7520 or 8037 with its key, answering as its RFC says.
fn assert_rfc_example(token: &str, keys: &dyn KeyLookup, payload: &str) {
    let decoded = verify_compact(token, keys, None, |bytes| Ok(bytes.to_vec())).unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), payload);
    // One changed character of the signature, and it no longer verifies.
    let mut altered = token.to_owned();
    let last = altered.pop().unwrap();
    altered.push(if last == 'A' { 'Q' } else { 'A' });
    assert!(verify_compact(&altered, keys, None, |_| Ok(())).is_err());
}

const RFC_7515_PAYLOAD: &str =
    "{\"iss\":\"joe\",\r\n \"exp\":1300819380,\r\n \"http://example.com/is_root\":true}";

/// The examples of RFC 7515 and RFC 8037 have no `kid` in their header, which sessiond's JWS
/// layer requires, so their signatures are checked with the verifier that layer uses, over the
/// example's exact signing input; one flipped bit of the signature must then fail.
fn assert_rfc_7515_signature(token: &str, verifier: &Verifier, payload: &str) {
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    assert!(verifier.verify(signing_input.as_bytes(), &signature));
    let mut altered = signature.clone();
    altered[0] ^= 1;
    assert!(!verifier.verify(signing_input.as_bytes(), &altered));
    let encoded_payload = signing_input.split('.').nth(1).unwrap();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(encoded_payload).unwrap(),
        payload.as_bytes()
    );
}

#[test]
fn wycheproof_suite_includes_the_rfc_7515_a1_hs256_example() {
    let token = concat!(
        "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9",
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
        ".dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    );
    let k =
        "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
    let verifier = Verifier::Hs256(HmacSha256::new(&URL_SAFE_NO_PAD.decode(k).unwrap()));
    assert_rfc_7515_signature(token, &verifier, RFC_7515_PAYLOAD);
}

#[test]
fn wycheproof_suite_includes_the_rfc_7515_a2_rs256_example() {
    let token = concat!(
        "eyJhbGciOiJSUzI1NiJ9",
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
        ".cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
    );
    let n = concat!(
        "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1",
        "Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpa",
        "SHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4",
        "LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ",
    );
    let public = RsaPublicKey {
        n: URL_SAFE_NO_PAD.decode(n).unwrap(),
        e: URL_SAFE_NO_PAD.decode("AQAB").unwrap(),
    };
    assert_rfc_7515_signature(token, &Verifier::rs256(public).unwrap(), RFC_7515_PAYLOAD);
}

#[test]
fn wycheproof_suite_includes_the_rfc_7515_a3_es256_example() {
    let token = concat!(
        "eyJhbGciOiJFUzI1NiJ9",
        ".eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ",
        ".DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q"
    );
    let x = URL_SAFE_NO_PAD
        .decode("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU")
        .unwrap();
    let y = URL_SAFE_NO_PAD
        .decode("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0")
        .unwrap();
    let mut point = [4u8; 65];
    point[1..33].copy_from_slice(&x);
    point[33..].copy_from_slice(&y);
    // The example's S is high: sessiond's rule refuses it as it is, and takes its low twin,
    // which AWS-LC and sessiond both verify; the backend alone takes the original.
    let (signing_input, signature) = token.rsplit_once('.').unwrap();
    let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
    assert!(high_s(&signature));
    let jwk = json!({
        "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
        "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
    });
    assert_es256_backend_accepts(&jwk, signing_input, &signature);
    let mut twin = signature.clone();
    super::keys::normalize_p256_s(&mut twin);
    let low_twin = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(&twin));
    assert_rfc_7515_signature(&low_twin, &Verifier::p256(point).unwrap(), RFC_7515_PAYLOAD);
}

#[test]
fn wycheproof_suite_includes_the_rfc_8037_a4_ed25519_example() {
    let token = concat!(
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc",
        ".hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
    );
    let public: [u8; 32] = URL_SAFE_NO_PAD
        .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        .unwrap()
        .try_into()
        .unwrap();
    assert_rfc_7515_signature(
        token,
        &Verifier::ed25519(public).unwrap(),
        "Example of Ed25519 signing",
    );
}

/// RFC 7520 §4: the payload all its signature examples sign.
const RFC_7520_PAYLOAD: &str = "It\u{2019}s a dangerous business, Frodo, going out your door. You step onto the road, and if you don't keep your feet, there\u{2019}s no knowing where you might be swept off to.";

#[test]
fn wycheproof_suite_includes_the_rfc_7520_section_4_examples() {
    // §4.1 (RS256) and §4.4 (HS256) have a `kid`, so they go through the whole JWS layer with
    // the RFC's keys; the JWS vector file carries the same examples, checked above as well.
    let set = vectors("json_web_signature_test.json");
    let mut checked = 0;
    for (group, test) in tests(&set) {
        if !group["comment"]
            .as_str()
            .is_some_and(|comment| comment.starts_with("rfc7520"))
        {
            continue;
        }
        let Some(keys) = jws_keys(group) else {
            continue; // §4.2 (PS384) and §4.3 (ES512): algorithms sessiond does not implement
        };
        assert_rfc_example(
            test["jws"].as_str().unwrap(),
            keys.as_ref(),
            RFC_7520_PAYLOAD,
        );
        checked += 1;
    }
    assert_eq!(checked, 4, "§4.1 and §4.4, each with and without key_ops");
}
