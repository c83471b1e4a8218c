use super::*;

fn key() -> ChallengeKey {
    ChallengeKey::new(&[7; 32])
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_unix_millis(seconds * 1000)
}

#[test]
fn a_registration_challenge_names_its_session_until_it_expires() {
    let session = SessionId::generate();
    let challenge = key().registration(session, at(1_000));
    assert_eq!(key().open_registration(&challenge, at(1_000)), Ok(session));
    assert_eq!(
        key().open_registration(&challenge, at(1_000 + REGISTRATION_CHALLENGE_SECONDS)),
        Ok(session)
    );
    assert_eq!(
        key().open_registration(&challenge, at(1_001 + REGISTRATION_CHALLENGE_SECONDS)),
        Err(Refusal::StaleChallenge)
    );
    assert_eq!(
        key().open_registration(&challenge, at(1_000 - CLOCK_LEEWAY_SECONDS - 1)),
        Err(Refusal::StaleChallenge),
        "minted further ahead than the leeway"
    );
}

#[test]
fn a_challenge_of_another_key_kind_or_shape_is_unknown() {
    let session = SessionId::generate();
    let now = at(50);
    let other = ChallengeKey::new(&[8; 32]).registration(session, now);
    assert_eq!(
        key().open_registration(&other, now),
        Err(Refusal::UnknownChallenge)
    );
    let refresh = key().refresh(session, 0, now);
    assert_eq!(
        key().open_registration(&refresh, now),
        Err(Refusal::UnknownChallenge),
        "a refresh challenge never registers"
    );
    let registration = key().registration(session, now);
    assert_eq!(
        key().check_refresh(&registration, session, 0, now),
        Err(Refusal::UnknownChallenge),
        "a registration challenge never refreshes"
    );
    let mut tampered = registration.clone().into_bytes();
    tampered[3] = if tampered[3] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ASCII");
    assert_eq!(
        key().open_registration(&tampered, now),
        Err(Refusal::UnknownChallenge)
    );
    for junk in ["", "x", "!!!!", &"A".repeat(4096)] {
        assert_eq!(
            key().open_registration(junk, now),
            Err(Refusal::UnknownChallenge)
        );
    }
}

#[test]
fn a_refresh_challenge_holds_for_its_session_and_generation_only() {
    let session = SessionId::generate();
    let now = at(10_000);
    let challenge = key().refresh(session, 3, now);
    assert_eq!(key().check_refresh(&challenge, session, 3, now), Ok(()));
    assert_eq!(
        key().check_refresh(&challenge, session, 4, now),
        Err(Refusal::StaleChallenge),
        "a renewal since spent it"
    );
    assert_eq!(
        key().check_refresh(&challenge, SessionId::generate(), 3, now),
        Err(Refusal::UnknownChallenge)
    );
    assert_eq!(
        key().check_refresh(
            &challenge,
            session,
            3,
            at(10_001 + REFRESH_CHALLENGE_SECONDS)
        ),
        Err(Refusal::StaleChallenge)
    );
}

#[test]
fn a_credential_names_its_session_and_is_stored_as_a_hash() {
    let session = SessionId::generate();
    let credential = IssuedCredential::mint(session, at(99));
    assert!(credential_names(&credential.value, session));
    assert!(!credential_names(&credential.value, SessionId::generate()));
    assert!(!credential_names("garbage", session));
    assert_eq!(credential.stored.hash, sha256(credential.value.as_bytes()));
    assert_eq!(credential.stored.expires_at, at(99));
    let again = IssuedCredential::mint(session, at(99));
    assert_ne!(*credential.value, *again.value, "each has its own secret");
    assert!(
        !format!("{credential:?}").contains(credential.value.as_str()),
        "Debug hides the value"
    );
}
