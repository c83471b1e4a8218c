//! Signing-key rotation and retirement: old tokens keep validating across a rotation, the JWKS
//! publishes exactly the keys that verify, another instance's rotation reaches a running server
//! within seconds, automatic rotation and retirement follow the clock, and the store keeps its
//! promises (compare-and-swap rotation, an active key is never retired).

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::Value;
use sessiond_core::Timestamp;
use sessiond_core::revocation::RevokedSessions;
use sessiond_core::signing_keys::{Activation, KeyInfo, KeyState, RETIREMENT_MARGIN, Rotation};
use sessiond_core::store::RetireOutcome;
use sessiond_core::token::{
    AccessTokenValidator, SigningAlgorithm, StoredKey, ValidationRules, VerificationKeys,
};
use sessiond_server::AppState;
use sessiond_server::database::OpenMode;

use crate::helpers::{TestApp, text};

/// The `kid` in an access token's header.
pub fn kid_of(token: &str) -> String {
    let header = token.split('.').next().expect("a compact token");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("base64url header"))
            .expect("a JSON header");
    text(&header, "kid").to_owned()
}

/// Rotates `app`'s signing key of its algorithm, as `sessiond keys rotate` does (`Now`: with
/// `--now`); returns the new key.
pub async fn rotate(app: &TestApp, activation: Activation) -> KeyInfo {
    let keys = app.state.service.signing_keys();
    match keys
        .rotate(keys.algorithm(), activation, app.clock_now())
        .await
        .expect("rotation")
    {
        Rotation::Rotated(key) => key,
        Rotation::AlreadyScheduled(key) => panic!("a rotation is already scheduled: {key:?}"),
    }
}

/// The `kid` of the key `app` signs with now.
pub fn signing_kid(app: &TestApp) -> String {
    app.state
        .service
        .signing_keys()
        .signing_kid(app.clock_now())
        .expect("a key signs")
}

/// The `kid`s the JWKS publishes, sorted.
async fn published_kids(app: &TestApp) -> Vec<String> {
    let jwks = app.get("/.well-known/jwks.json", None).await;
    assert_eq!(jwks.status, StatusCode::OK);
    let mut kids: Vec<String> = jwks.body["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|key| text(key, "kid").to_owned())
        .collect();
    kids.sort();
    kids
}

fn sorted(mut kids: Vec<String>) -> Vec<String> {
    kids.sort();
    kids
}

/// Polls `condition` every 50 ms for up to `limit`; returns how long it took.
async fn within<F, Fut>(limit: Duration, what: &str, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if condition().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_rotation_keeps_old_tokens_valid_until_the_old_key_is_retired() {
    let app = TestApp::spawn().await;
    let keys = app.state.service.signing_keys();
    let before = app.create_session("alice").await;
    let old_token = text(&before, "access_token").to_owned();
    let old_kid = kid_of(&old_token);
    assert_eq!(published_kids(&app).await, std::slice::from_ref(&old_kid));

    let rotated = rotate(&app, Activation::Now).await;
    assert_ne!(rotated.kid, old_kid);

    // New tokens, from new sessions and from refreshes, carry the new kid.
    let after = app.create_session("bob").await;
    assert_eq!(kid_of(text(&after, "access_token")), rotated.kid);
    let refreshed = app.refresh(text(&before, "refresh_token")).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
    assert_eq!(kid_of(text(&refreshed.body, "access_token")), rotated.kid);
    // The old token still validates, and both keys are published.
    let current = app.get("/v1/sessions/current", Some(&old_token)).await;
    assert_eq!(current.status, StatusCode::OK, "{}", current.body);
    assert_eq!(
        published_kids(&app).await,
        sorted(vec![old_kid.clone(), rotated.kid.clone()])
    );

    // The replaced key is scheduled for retirement once its last token can have expired.
    let listed = keys.keys();
    let old = listed
        .iter()
        .find(|key| key.kid == old_kid)
        .expect("old key");
    let deactivated_at = old.deactivated_at.expect("the old key was deactivated");
    let policy = app.state.service.policy();
    assert_eq!(
        old.retire_at,
        Some(deactivated_at.plus(policy.access_ttl + policy.leeway + RETIREMENT_MARGIN))
    );
    let new = listed
        .iter()
        .find(|key| key.kid == rotated.kid)
        .expect("new key");
    assert_eq!((new.deactivated_at, new.retire_at), (None, None));

    // The active key is never retired; an unknown kid is reported as such.
    let now = app.clock_now();
    assert_eq!(
        keys.retire(&rotated.kid, now).await.expect("retire"),
        RetireOutcome::Active
    );
    assert_eq!(
        keys.retire("no-such-kid", now).await.expect("retire"),
        RetireOutcome::NotFound
    );
    assert_eq!(
        keys.retire(&old_kid, now).await.expect("retire"),
        RetireOutcome::Retired
    );

    assert_eq!(
        published_kids(&app).await,
        std::slice::from_ref(&rotated.kid)
    );
    let refused = app.get("/v1/sessions/current", Some(&old_token)).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let still = app
        .get(
            "/v1/sessions/current",
            Some(text(&refreshed.body, "access_token")),
        )
        .await;
    assert_eq!(still.status, StatusCode::OK);
    // The retired key's row stays, listed as retired, without its secret, until the retention
    // passes.
    let listed = keys.keys();
    let old = listed
        .iter()
        .find(|key| key.kid == old_kid)
        .expect("listed");
    assert_eq!(old.state(now), KeyState::Retired);
    assert_eq!(old.retired_at, Some(now));
    assert_eq!(
        app.scalar(
            "SELECT COUNT(*) FROM signing_keys WHERE retired_at IS NOT NULL AND length(secret) = 0"
        )
        .await,
        1,
        "a retired key's secret is gone from the database"
    );
    let retention = policy.retention;
    assert_eq!(keys.purge_retired(retention, now).await.expect("purge"), 0);
    let later = now.plus(retention + Duration::from_secs(1));
    assert_eq!(
        keys.purge_retired(retention, later).await.expect("purge"),
        1
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM signing_keys").await, 1);
    assert!(keys.keys().iter().all(|key| key.kid != old_kid));
}

async fn a_rotation_by_another_instance_reaches_a_running_server_within_seconds() {
    let app = TestApp::spawn().await;
    let old_token = text(&app.create_session("alice").await, "access_token").to_owned();
    let old_kid = kid_of(&old_token);

    // A second instance on the same database, as another server or the CLI would be.
    let other = AppState::build(&app.config, app.clock.clone(), OpenMode::MustExist)
        .await
        .expect("a second instance starts");
    let other_keys = other.service.signing_keys();
    let rotated = match other_keys
        .rotate(other_keys.algorithm(), Activation::Now, app.clock_now())
        .await
        .expect("rotation")
    {
        Rotation::Rotated(key) => key,
        Rotation::AlreadyScheduled(key) => panic!("already scheduled: {key:?}"),
    };
    let took = within(Duration::from_secs(5), "the new key signs", || async {
        kid_of(text(&app.create_session("bob").await, "access_token")) == rotated.kid
    })
    .await;
    eprintln!("a rotation by another instance was in force after {took:?}");
    assert_eq!(
        published_kids(&app).await,
        sorted(vec![old_kid.clone(), rotated.kid.clone()])
    );
    assert_eq!(
        app.get("/v1/sessions/current", Some(&old_token))
            .await
            .status,
        StatusCode::OK
    );

    assert_eq!(
        other
            .service
            .signing_keys()
            .retire(&old_kid, app.clock_now())
            .await
            .expect("retire"),
        RetireOutcome::Retired
    );
    within(
        Duration::from_secs(5),
        "the retired key is refused",
        || async {
            app.get("/v1/sessions/current", Some(&old_token))
                .await
                .status
                == StatusCode::UNAUTHORIZED
        },
    )
    .await;
    assert_eq!(published_kids(&app).await, [rotated.kid]);
}

async fn keys_rotate_when_due_and_retire_once_their_tokens_have_expired() {
    let app = TestApp::spawn_with(|raw| raw.key_rotation = Some("1h".into())).await;
    let first_kid = signing_kid(&app);

    // Not due yet: nothing happens for a while.
    app.advance(Duration::from_secs(59 * 60));
    let before = app.create_session("alice").await;
    let old_token = text(&before, "access_token").to_owned();
    assert_eq!(kid_of(&old_token), first_kid);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(published_kids(&app).await, std::slice::from_ref(&first_kid));

    // Due: the background task rotates within a second or two. The new key is published at
    // once and signs only after the publication delay.
    app.advance(Duration::from_secs(2 * 60));
    within(Duration::from_secs(5), "the key is rotated", || async {
        published_kids(&app).await.len() == 2
    })
    .await;
    let delay = app.state.service.signing_keys().publication_delay();
    assert_eq!(delay, Duration::from_secs(600), "the default");
    let new_kid = published_kids(&app)
        .await
        .into_iter()
        .find(|kid| *kid != first_kid)
        .expect("the new key");
    assert_eq!(
        kid_of(text(&app.create_session("carol").await, "access_token")),
        first_kid,
        "published, not signing yet"
    );
    app.advance(delay);
    assert_eq!(signing_kid(&app), new_kid);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        published_kids(&app).await.len(),
        2,
        "no second rotation while the first is young"
    );
    assert_eq!(
        kid_of(text(&app.create_session("bob").await, "access_token")),
        new_kid
    );
    assert_eq!(
        app.get("/v1/sessions/current", Some(&old_token))
            .await
            .status,
        StatusCode::OK,
        "a rotation never invalidates a live token"
    );

    // Once every token the old key can have signed has expired, it is retired.
    let policy = app.state.service.policy();
    let keep = policy.access_ttl + policy.leeway + RETIREMENT_MARGIN;
    app.advance(keep - Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        published_kids(&app).await.len(),
        2,
        "kept while its tokens may live"
    );
    app.advance(Duration::from_secs(120));
    within(Duration::from_secs(5), "the old key is retired", || async {
        published_kids(&app).await == [new_kid.clone()]
    })
    .await;
}

async fn the_store_rotates_by_compare_and_swap_and_moves_its_key_version() {
    let app = TestApp::spawn().await;
    let store = app.state.service.store();
    let now = app.clock_now();
    let active = signing_kid(&app);
    let version = store.signing_keys_version().await.expect("version");

    let first = StoredKey::generate(SigningAlgorithm::EdDsa, now);
    let second = StoredKey::generate(SigningAlgorithm::EdDsa, now);
    assert!(
        !store
            .rotate_signing_key(&first, Some("not-the-active-kid"))
            .await
            .expect("rotate"),
        "a rotation from a key that is not active is refused"
    );
    assert!(
        !store
            .rotate_signing_key(&first, None)
            .await
            .expect("rotate")
    );
    assert_eq!(
        store.signing_keys_version().await.expect("version"),
        version,
        "a refused rotation writes nothing"
    );
    assert!(
        store
            .rotate_signing_key(&first, Some(&active))
            .await
            .expect("rotate")
    );
    assert!(
        !store
            .rotate_signing_key(&second, Some(&active))
            .await
            .expect("rotate"),
        "the loser of two rotations from the same key writes nothing"
    );
    let after = store.signing_keys_version().await.expect("version");
    assert!(after > version, "a rotation moves the version");

    let stored = store.signing_keys().await.expect("keys");
    let active_now: Vec<&str> = stored
        .iter()
        .filter(|key| key.is_active())
        .map(|key| key.kid.as_str())
        .collect();
    assert_eq!(active_now, [first.kid.as_str()]);
    let replaced = stored.iter().find(|key| key.kid == active).expect("kept");
    assert_eq!(replaced.deactivated_at, Some(first.created_at));
    assert!(
        !store
            .insert_first_signing_key(&second)
            .await
            .expect("insert"),
        "a store with an active key gets no other first key"
    );

    assert_eq!(
        store
            .retire_signing_keys_deactivated_before(first.created_at, now)
            .await
            .expect("retire"),
        Vec::<String>::new(),
        "deactivated at the cutoff is not before it"
    );
    assert_eq!(
        store
            .retire_signing_keys_deactivated_before(
                first.created_at.plus(Duration::from_millis(1)),
                now,
            )
            .await
            .expect("retire"),
        [active]
    );
    assert!(store.signing_keys_version().await.expect("version") > after);
    assert_eq!(
        store
            .retire_signing_key(&first.kid, now)
            .await
            .expect("retire"),
        RetireOutcome::Active
    );
}

async fn a_server_signing_with_each_algorithm_rotates_to_a_key_of_that_algorithm() {
    for algorithm in ["ES256", "RS256", "HS256"] {
        let app = TestApp::spawn_with(|raw| raw.signing_alg = Some(algorithm.into())).await;
        let old_token = text(&app.create_session("alice").await, "access_token").to_owned();
        let rotated = rotate(&app, Activation::Now).await;
        assert_eq!(rotated.algorithm.jose_name(), algorithm);
        let new_token = text(&app.create_session("bob").await, "access_token").to_owned();
        assert_eq!(kid_of(&new_token), rotated.kid);
        for token in [&old_token, &new_token] {
            assert_eq!(
                app.get("/v1/sessions/current", Some(token)).await.status,
                StatusCode::OK,
                "{algorithm}"
            );
        }
        let expected = if algorithm == "HS256" { 0 } else { 2 };
        assert_eq!(published_kids(&app).await.len(), expected, "{algorithm}");
    }
}

/// A resource server as `jose`'s `createRemoteJWKSet` or an HTTP cache would be at its
/// strictest: it fetches the JWK Set, keeps it for the `max-age` the answer gives (by the test's
/// clock), and refuses a token whose `kid` the cached set lacks, without refetching early.
struct CachingVerifier {
    validator: AccessTokenValidator,
    keys: VerificationKeys,
    expires_at: Timestamp,
    fetches: usize,
}

impl CachingVerifier {
    fn new(app: &TestApp) -> Self {
        Self {
            validator: AccessTokenValidator::new(ValidationRules {
                issuer: app.config.issuer.clone(),
                audience: app.config.audience.clone(),
                leeway_seconds: 0,
            }),
            keys: VerificationKeys::new(),
            expires_at: Timestamp::from_unix_millis(0),
            fetches: 0,
        }
    }

    /// Whether `token` verifies against the cached set, refetched only once it is stale.
    async fn accepts(&mut self, app: &TestApp, token: &str) -> bool {
        let now = app.clock_now();
        if now >= self.expires_at {
            let answer = app.get("/.well-known/jwks.json", None).await;
            let cache_control = answer.headers[reqwest::header::CACHE_CONTROL]
                .to_str()
                .expect("ASCII");
            let max_age: u64 = cache_control
                .strip_prefix("public, max-age=")
                .and_then(|seconds| seconds.parse().ok())
                .unwrap_or_else(|| panic!("a max-age: {cache_control}"));
            self.keys = VerificationKeys::from_public_jwks(&answer.body).expect("a JWK Set");
            self.expires_at = now.plus(Duration::from_secs(max_age));
            self.fetches += 1;
        }
        self.validator
            .validate(token, &self.keys, &RevokedSessions::new(), now)
            .is_ok()
    }
}

/// Runs a rotation with `activation` under steady traffic, with a verifier that cached the JWK
/// Set just before; returns the tokens it refused and the kids that signed.
async fn refusals_across_a_rotation(app: &TestApp, activation: Activation) -> (usize, Vec<String>) {
    let mut verifier = CachingVerifier::new(app);
    let step = Duration::from_secs(10);
    let mut refused = 0;
    let mut kids: Vec<String> = Vec::new();
    let mut session = app.create_session("alice").await;
    let mut rotated = false;
    // 40 minutes of a token every 10 s: the rotation happens after 1 minute, with the
    // verifier's set fetched a moment before.
    for tick in 0..240 {
        if tick == 6 && !rotated {
            rotate(app, activation).await;
            rotated = true;
        }
        let refreshed = app.refresh(text(&session, "refresh_token")).await;
        assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
        session = refreshed.body;
        let token = text(&session, "access_token").to_owned();
        let kid = kid_of(&token);
        if kids.last() != Some(&kid) {
            kids.push(kid);
        }
        if !verifier.accepts(app, &token).await {
            refused += 1;
        }
        app.advance(step);
    }
    assert!(
        verifier.fetches > 1,
        "the verifier refetched as max-age said"
    );
    (refused, kids)
}

async fn a_verifier_caching_the_jwks_for_its_max_age_refuses_no_token_across_a_rotation() {
    let app = TestApp::spawn().await;
    let keys = app.state.service.signing_keys();
    let max_age = app.get("/.well-known/jwks.json", None).await.headers
        [reqwest::header::CACHE_CONTROL]
        .to_str()
        .expect("ASCII")
        .to_owned();
    assert_eq!(
        max_age, "public, max-age=300",
        "half the default 10-minute delay"
    );
    assert!(keys.jwks_max_age() * 2 <= keys.publication_delay());

    let (refused, kids) = refusals_across_a_rotation(&app, Activation::AfterPublication).await;
    assert_eq!(kids.len(), 2, "the new key signed within the run: {kids:?}");
    assert_eq!(refused, 0, "no token refused across a staged rotation");

    // The control: an emergency rotation signs at once, and the same verifier refuses the new
    // key's tokens until its cached set expires. This is what the staged rotation prevents.
    let (refused, kids) = refusals_across_a_rotation(&app, Activation::Now).await;
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(refused > 0, "an emergency rotation breaks cached key sets");
}

async fn a_staged_rotation_switches_every_instance_at_the_same_moment() {
    let app = TestApp::spawn().await;
    let old_kid = signing_kid(&app);
    // A second instance on the same database.
    let other = AppState::build(&app.config, app.clock.clone(), OpenMode::MustExist)
        .await
        .expect("a second instance starts");
    let other_keys = other.service.signing_keys();
    let rotated = match other_keys
        .rotate(
            other_keys.algorithm(),
            Activation::AfterPublication,
            app.clock_now(),
        )
        .await
        .expect("rotation")
    {
        Rotation::Rotated(key) => key,
        Rotation::AlreadyScheduled(key) => panic!("already scheduled: {key:?}"),
    };
    let delay = other_keys.publication_delay();
    assert_eq!(rotated.signs_from, app.clock_now().plus(delay));

    // The running server publishes the new key within seconds, and neither instance signs
    // with it yet.
    within(
        Duration::from_secs(5),
        "the new key is published",
        || async { published_kids(&app).await.contains(&rotated.kid) },
    )
    .await;
    app.advance(delay - Duration::from_millis(1));
    assert_eq!(signing_kid(&app), old_kid);
    assert_eq!(
        other_keys.signing_kid(app.clock_now()).as_deref(),
        Some(old_kid.as_str())
    );
    assert_eq!(
        kid_of(text(&app.create_session("alice").await, "access_token")),
        old_kid
    );
    let listed = app.state.service.signing_keys().keys();
    let state_of = |kid: &str| {
        listed
            .iter()
            .find(|key| key.kid == kid)
            .map(|key| key.state(app.clock_now()).as_str())
    };
    assert_eq!(state_of(&old_kid), Some("signing"));
    assert_eq!(state_of(&rotated.kid), Some("next"));

    // At its activation, both sign with it, without waiting for a reload.
    app.advance(Duration::from_millis(1));
    assert_eq!(signing_kid(&app), rotated.kid);
    assert_eq!(
        other_keys.signing_kid(app.clock_now()).as_deref(),
        Some(rotated.kid.as_str())
    );
    assert_eq!(
        kid_of(text(&app.create_session("bob").await, "access_token")),
        rotated.kid
    );

    // A second staged rotation while one waits writes nothing; the old key, still signing
    // before the activation, could not be retired then.
    let keys = app.state.service.signing_keys();
    assert_eq!(
        keys.retire(&old_kid, rotated.signs_from.minus(Duration::from_millis(1)))
            .await
            .expect("retire"),
        RetireOutcome::Active,
        "a key is never retired while it signs"
    );
    let next = rotate(&app, Activation::AfterPublication).await;
    let again = keys
        .rotate(
            keys.algorithm(),
            Activation::AfterPublication,
            app.clock_now(),
        )
        .await
        .expect("rotation");
    assert_eq!(again, Rotation::AlreadyScheduled(next.clone()));
    assert_eq!(
        app.state
            .service
            .store()
            .signing_keys()
            .await
            .expect("keys")
            .len(),
        3,
        "one key per rotation"
    );
}

/// What a command must not change: every signing key's row, and how many rows the other
/// tables hold.
async fn fingerprint(app: &TestApp) -> Vec<String> {
    let mut rows: Vec<String> = app
        .state
        .service
        .store()
        .signing_keys()
        .await
        .expect("keys")
        .iter()
        .map(|key| {
            format!(
                "{} {} {:?} {:?} {:?} {}",
                key.kid,
                key.algorithm.jose_name(),
                key.created_at,
                key.signs_from,
                key.deactivated_at,
                URL_SAFE_NO_PAD.encode(&key.secret[..])
            )
        })
        .collect();
    for table in [
        "signing_keys",
        "data_keys",
        "sessions",
        "refresh_tokens",
        "audit_events",
        "devices",
    ] {
        let count = app.scalar(&format!("SELECT COUNT(*) FROM {table}")).await;
        rows.push(format!("{table}: {count}"));
    }
    let version = app.scalar("SELECT version FROM signing_keys_version").await;
    rows.push(format!("signing_keys_version: {version}"));
    rows
}

/// The lines of `stderr` that are not development warnings.
fn reasons(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("WARNING:"))
        .map(str::to_owned)
        .collect()
}

async fn read_only_commands_write_nothing_even_when_the_signing_algorithm_differs() {
    let app = TestApp::spawn().await;
    let session = app.create_session("alice").await;
    let kid = kid_of(text(&session, "access_token"));
    // Let the server seal its audit events first: it runs beside the commands.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = fingerprint(&app).await;

    let mut env = crate::helpers::master_key_env(&app.config.database_url);
    env.push(("SESSIOND_SIGNING_ALG", "ES256"));
    let commands: [&[&str]; 7] = [
        &["keys", "list"],
        &["keys", "list", "--json"],
        &["sessions", "list", "--user", "alice"],
        &["sessions", "list", "--user", "alice", "--json"],
        &["audit", "verify"],
        &["audit", "export"],
        &["keys", "secret", &kid],
    ];
    for args in commands {
        let finished = crate::crypt::sessiond(&app, args, &env);
        let secret = args[..2] == ["keys", "secret"];
        assert_eq!(
            finished.status.success(),
            !secret,
            "{args:?}: {}",
            String::from_utf8_lossy(&finished.stderr)
        );
        assert_eq!(fingerprint(&app).await, before, "{args:?} wrote nothing");
    }
    let listed = crate::crypt::sessiond(&app, &["keys", "list", "--json"], &env);
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert_eq!(
        listed["keys"].as_array().expect("keys").len(),
        1,
        "no ES256 key made: {listed}"
    );
    assert_eq!(
        listed["keys"][0]["state"], "signing",
        "the EdDSA key signs, whatever the command's algorithm: {listed}"
    );
}

async fn changing_the_signing_algorithm_is_one_staged_rotation() {
    let app = TestApp::spawn().await;
    let old_kid = signing_kid(&app);
    let mut env = crate::helpers::master_key_env(&app.config.database_url);
    env.push(("SESSIOND_SIGNING_ALG", "ES256"));
    let mut es256 = app.config.clone();
    es256.signing_algorithm = SigningAlgorithm::Es256;

    // A server configured for another algorithm refuses to start, saying what to run.
    let refused = AppState::build(&es256, app.clock.clone(), OpenMode::CreateIfMissing)
        .await
        .expect_err("refused");
    let message = format!("{refused:#}");
    assert!(
        message.contains("sessiond keys rotate --alg ES256") && !message.contains('\n'),
        "{message}"
    );
    let served = crate::crypt::sessiond(&app, &["serve"], &env);
    assert!(!served.status.success());
    let lines = reasons(&served.stderr);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("keys rotate --alg ES256"), "{lines:?}");
    assert_eq!(app.scalar("SELECT COUNT(*) FROM signing_keys").await, 1);

    // The rotation makes exactly one key, published now and signing after the delay.
    let rotated = crate::crypt::sessiond(&app, &["keys", "rotate", "--alg", "ES256"], &env);
    let stdout = String::from_utf8_lossy(&rotated.stdout);
    assert!(
        rotated.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    assert!(
        stdout.contains("is published now and signs new tokens from"),
        "{stdout}"
    );
    let stored = app
        .state
        .service
        .store()
        .signing_keys()
        .await
        .expect("keys");
    assert_eq!(stored.len(), 2, "exactly one new key");
    let new = stored
        .iter()
        .find(|key| key.algorithm == SigningAlgorithm::Es256)
        .expect("the ES256 key");
    assert_eq!(
        new.signs_from,
        new.created_at.plus(Duration::from_secs(600)),
        "signs after the default publication delay"
    );
    within(
        Duration::from_secs(5),
        "the new key is published",
        || async { published_kids(&app).await.contains(&new.kid) },
    )
    .await;

    // Until it signs, an ES256 server still refuses to start, naming the moment.
    let served = crate::crypt::sessiond(&app, &["serve"], &env);
    assert!(!served.status.success());
    let lines = reasons(&served.stderr);
    assert_eq!(lines.len(), 1, "one line: {lines:?}");
    assert!(lines[0].contains("signs only from"), "{lines:?}");

    // From then on an ES256 instance starts and signs with it, and so does the running server
    // configured for EdDSA: the rotation replaced the EdDSA key, which only verifies now.
    let old = stored
        .iter()
        .find(|key| key.kid == old_kid)
        .expect("the EdDSA key");
    assert_eq!(old.deactivated_at, Some(new.signs_from));
    app.clock.set(new.signs_from.max(app.clock_now()));
    let switched = AppState::build(&es256, app.clock.clone(), OpenMode::CreateIfMissing)
        .await
        .expect("starts once the key signs");
    assert_eq!(
        switched
            .service
            .signing_keys()
            .signing_kid(app.clock_now())
            .as_deref(),
        Some(new.kid.as_str())
    );
    assert_eq!(signing_kid(&app), new.kid);
    let states: Vec<(String, &str)> = app
        .state
        .service
        .signing_keys()
        .keys()
        .iter()
        .map(|key| (key.kid.clone(), key.state(app.clock_now()).as_str()))
        .collect();
    assert_eq!(
        states,
        [(old_kid, "verifying"), (new.kid.clone(), "signing")],
        "never a second key signing"
    );
    assert_eq!(app.scalar("SELECT COUNT(*) FROM signing_keys").await, 2);
}

async fn every_command_refuses_a_wrong_master_key_with_one_line() {
    let app = TestApp::spawn().await;
    app.create_session("alice").await;
    let kid = signing_kid(&app);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = fingerprint(&app).await;
    let wrong = [(
        "SESSIOND_MASTER_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    )];
    let session_id = uuid::Uuid::new_v4().to_string();
    let new_key_file = app.dir.path().join("new.master-key").display().to_string();
    let commands: [&[&str]; 13] = [
        &["migrate"],
        &["keys", "list"],
        &["keys", "secret", &kid],
        &["keys", "rotate"],
        &["keys", "rotate", "--now"],
        &["keys", "retire", &kid],
        &["keys", "rotate-master", "--new-key-file", &new_key_file],
        &["sessions", "list", "--user", "alice"],
        &["sessions", "revoke", &session_id],
        &["audit", "verify"],
        &["audit", "export"],
        &["audit", "seal"],
        &["audit", "prune", "--older-than", "1d"],
    ];
    for args in commands {
        let finished = crate::crypt::sessiond(&app, args, &wrong);
        assert!(!finished.status.success(), "{args:?} refused");
        let lines = reasons(&finished.stderr);
        assert_eq!(lines.len(), 1, "{args:?}: one line: {lines:?}");
        assert!(lines[0].contains("wrong master key"), "{args:?}: {lines:?}");
        assert_eq!(fingerprint(&app).await, before, "{args:?} wrote nothing");
    }
}

crate::on_every_store!(
    read_only_commands_write_nothing_even_when_the_signing_algorithm_differs,
    changing_the_signing_algorithm_is_one_staged_rotation,
    every_command_refuses_a_wrong_master_key_with_one_line,
    a_verifier_caching_the_jwks_for_its_max_age_refuses_no_token_across_a_rotation,
    a_staged_rotation_switches_every_instance_at_the_same_moment,
    a_rotation_keeps_old_tokens_valid_until_the_old_key_is_retired,
    a_rotation_by_another_instance_reaches_a_running_server_within_seconds,
    keys_rotate_when_due_and_retire_once_their_tokens_have_expired,
    the_store_rotates_by_compare_and_swap_and_moves_its_key_version,
    a_server_signing_with_each_algorithm_rotates_to_a_key_of_that_algorithm,
);
