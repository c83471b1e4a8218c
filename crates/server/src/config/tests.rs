//! The configuration's tests: sources and precedence, defaults, and the message of each bad
//! setting.

use std::time::Duration;

use sessiond_core::anomaly::{AnomalyPolicy, Signal};
use sessiond_core::token::SigningAlgorithm;

use super::*;
use crate::admin_auth::AdminScope;
use crate::ratelimit::{ForwardedHeader, Limit, Quota};

fn key() -> String {
    "k".repeat(MIN_ADMIN_KEY_LEN)
}

#[test]
fn no_configuration_gives_development_defaults_with_warnings() {
    let config = Config::from_raw(&RawConfig::default()).unwrap();
    assert_eq!(config.environment, Environment::Development);
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.issuer, "http://127.0.0.1:8080");
    assert_eq!(config.policy, Policy::default());
    assert_eq!(config.metrics_listen, None);
    assert!(!config.cookie_mode, "cookie mode is off by default");
    assert!(
        config.cors_origins.is_empty(),
        "no origin gets CORS headers by default"
    );
    assert!(!config.warnings.is_empty());
}

#[test]
fn every_signing_algorithm_is_accepted_by_its_jose_name_and_no_other() {
    for algorithm in SigningAlgorithm::ALL {
        let raw = RawConfig {
            signing_alg: Some(algorithm.jose_name().into()),
            ..RawConfig::default()
        };
        assert_eq!(Config::from_raw(&raw).unwrap().signing_algorithm, algorithm);
    }
    for name in ["none", "eddsa", "es256", "RS384", "PS256", ""] {
        let raw = RawConfig {
            signing_alg: Some(name.into()),
            ..RawConfig::default()
        };
        let error = Config::from_raw(&raw).unwrap_err();
        assert!(
            error.contains("SESSIOND_SIGNING_ALG must be EdDSA, ES256, RS256 or HS256"),
            "{error}"
        );
    }
}

#[test]
fn sqlite_max_size_takes_bytes_or_binary_units_of_a_mebibyte_or_more() {
    let parsed = |text: &str| {
        Config::from_raw(&RawConfig {
            sqlite_max_size: Some(text.into()),
            ..RawConfig::default()
        })
        .map(|config| config.sqlite_max_size)
    };
    assert_eq!(
        Config::from_raw(&RawConfig::default())
            .unwrap()
            .sqlite_max_size,
        None
    );
    assert_eq!(parsed("1048576"), Ok(Some(1_048_576)));
    assert_eq!(parsed("2MiB"), Ok(Some(2 * 1024 * 1024)));
    assert_eq!(parsed(" 10 GiB "), Ok(Some(10 * 1024 * 1024 * 1024)));
    assert_eq!(parsed("4096KiB"), Ok(Some(4 * 1024 * 1024)));
    for bad in ["1KiB", "1MB", "lots", "-5MiB", "99999999999999GiB"] {
        let error = parsed(bad).unwrap_err();
        assert!(
            error.starts_with("SESSIOND_SQLITE_MAX_SIZE must be"),
            "{bad}: {error}"
        );
    }
}

#[test]
fn key_rotation_is_off_by_default_and_takes_a_duration_of_a_minute_or_more() {
    assert_eq!(
        Config::from_raw(&RawConfig::default())
            .unwrap()
            .key_rotation,
        None
    );
    let with = |text: &str| {
        Config::from_raw(&RawConfig {
            key_rotation: Some(text.into()),
            ..RawConfig::default()
        })
    };
    assert_eq!(with("0").unwrap().key_rotation, None);
    assert_eq!(
        with("30d").unwrap().key_rotation,
        Some(Duration::from_secs(30 * 86_400))
    );
    assert!(with("30s").unwrap_err().contains("SESSIOND_KEY_ROTATION"));
    assert!(
        with("monthly")
            .unwrap_err()
            .contains("SESSIOND_KEY_ROTATION")
    );
}

#[test]
fn failed_refreshes_are_audited_each_minute_unless_a_period_from_1s_to_1h_is_set() {
    let with = |text: Option<&str>| {
        Config::from_raw(&RawConfig {
            audit_failure_period: text.map(Into::into),
            ..RawConfig::default()
        })
        .map(|config| config.audit_failure_period)
    };
    assert_eq!(with(None), Ok(Duration::from_secs(60)));
    assert_eq!(with(Some("5s")), Ok(Duration::from_secs(5)));
    assert_eq!(with(Some("1h")), Ok(Duration::from_secs(3600)));
    for bad in ["0", "500ms", "2h", "often"] {
        let error = with(Some(bad)).unwrap_err();
        assert!(
            error.starts_with("SESSIOND_AUDIT_FAILURE_PERIOD must be") && !error.contains('\n'),
            "{bad}: {error}"
        );
    }
}

#[test]
fn dpop_nonces_are_off_and_proofs_live_a_minute_unless_set() {
    let with = |nonce: Option<&str>, max_age: Option<&str>| {
        Config::from_raw(&RawConfig {
            dpop_nonce: nonce.map(Into::into),
            dpop_proof_max_age: max_age.map(Into::into),
            ..RawConfig::default()
        })
        .map(|config| config.dpop)
    };
    assert_eq!(
        with(None, None),
        Ok(DpopSettings {
            nonce_required: false,
            proof_max_age: Duration::from_secs(60),
        })
    );
    assert_eq!(
        with(Some("required"), Some("2m")),
        Ok(DpopSettings {
            nonce_required: true,
            proof_max_age: Duration::from_secs(120),
        })
    );
    assert!(!with(Some("off"), Some("5s")).unwrap().nonce_required);
    let error = with(Some("yes"), None).unwrap_err();
    assert!(
        error.starts_with("SESSIOND_DPOP_NONCE must be off or required"),
        "{error}"
    );
    for bad in ["0", "1s", "11m", "soon"] {
        let error = with(None, Some(bad)).unwrap_err();
        assert!(
            error.starts_with("SESSIOND_DPOP_PROOF_MAX_AGE must be") && !error.contains('\n'),
            "{bad}: {error}"
        );
    }
}

#[test]
fn the_publication_delay_defaults_to_ten_minutes_and_bounds_the_rotation_period() {
    let with = |delay: Option<&str>, rotation: Option<&str>| {
        Config::from_raw(&RawConfig {
            key_publication_delay: delay.map(Into::into),
            key_rotation: rotation.map(Into::into),
            ..RawConfig::default()
        })
    };
    assert_eq!(
        with(None, None).unwrap().key_publication_delay,
        Duration::from_secs(600)
    );
    assert_eq!(
        with(Some("2s"), None).unwrap().key_publication_delay,
        Duration::from_secs(2)
    );
    for refused in ["0", "1s", "soon"] {
        let error = with(Some(refused), None).unwrap_err();
        assert!(
            error.contains("SESSIOND_KEY_PUBLICATION_DELAY") && !error.contains('\n'),
            "{refused}: {error}"
        );
    }
    let error = with(None, Some("5m")).unwrap_err();
    assert!(
        error.contains("SESSIOND_KEY_ROTATION (5m)")
            && error.contains("SESSIOND_KEY_PUBLICATION_DELAY (10m)"),
        "{error}"
    );
    assert_eq!(
        with(Some("1m"), Some("5m")).unwrap().key_rotation,
        Some(Duration::from_secs(300))
    );
}

#[test]
fn weak_or_inconsistent_settings_are_refused_with_a_reason() {
    let cases = [
        (
            RawConfig {
                admin_keys: Some("short".into()),
                ..RawConfig::default()
            },
            "SESSIOND_ADMIN_KEYS: key #1 is shorter than 32 characters",
        ),
        (
            RawConfig {
                idle_timeout: Some("31d".into()),
                absolute_timeout: Some("30d".into()),
                ..RawConfig::default()
            },
            "SESSIOND_IDLE_TIMEOUT (31d) must not exceed SESSIOND_ABSOLUTE_TIMEOUT (30d)",
        ),
        (
            RawConfig {
                access_ttl: Some("fifteen".into()),
                ..RawConfig::default()
            },
            "SESSIOND_ACCESS_TTL",
        ),
        (
            RawConfig {
                env: Some("production".into()),
                ..RawConfig::default()
            },
            "SESSIOND_ADMIN_KEYS",
        ),
        (
            RawConfig {
                env: Some("production".into()),
                admin_keys: Some(key().into()),
                ..RawConfig::default()
            },
            "SESSIOND_ISSUER",
        ),
        (
            RawConfig {
                database_url: Some("mysql://x".into()),
                ..RawConfig::default()
            },
            "sqlite",
        ),
        (
            RawConfig {
                max_sessions_per_user: Some("0".into()),
                ..RawConfig::default()
            },
            "SESSIOND_MAX_SESSIONS_PER_USER (0) must be at least 1",
        ),
        (
            RawConfig {
                cookie_mode: Some("yes".into()),
                ..RawConfig::default()
            },
            "SESSIOND_COOKIE_MODE must be on or off (got \"yes\")",
        ),
        (
            RawConfig {
                cors_origins: Some("https://app.example.com, *".into()),
                ..RawConfig::default()
            },
            "SESSIOND_CORS_ORIGINS must list origins like https://app.example.com",
        ),
        (
            RawConfig {
                cors_origins: Some("https://app.example.com/".into()),
                ..RawConfig::default()
            },
            "SESSIOND_CORS_ORIGINS",
        ),
        (
            RawConfig {
                metrics_listen: Some("localhost".into()),
                ..RawConfig::default()
            },
            "SESSIOND_METRICS_LISTEN must be address:port (got \"localhost\")",
        ),
        (
            RawConfig {
                metrics_listen: Some("127.0.0.1:8080".into()),
                ..RawConfig::default()
            },
            "SESSIOND_METRICS_LISTEN must differ from SESSIOND_LISTEN",
        ),
    ];
    for (raw, expected) in cases {
        let error = Config::from_raw(&raw).unwrap_err();
        assert!(
            error.contains(expected),
            "{error:?} should mention {expected:?}"
        );
        assert!(!error.contains('\n'), "one line: {error:?}");
    }
}

#[test]
fn lifetime_errors_name_the_variables_and_echo_the_values_as_given() {
    let cases: [(&[(&str, &str)], &str); 11] = [
        (
            &[("idle", "40d"), ("absolute", "30d")],
            "SESSIOND_IDLE_TIMEOUT (40d) must not exceed SESSIOND_ABSOLUTE_TIMEOUT (30d)",
        ),
        (
            &[("idle", " 40d ")],
            "SESSIOND_IDLE_TIMEOUT (40d) must not exceed \
             SESSIOND_ABSOLUTE_TIMEOUT (30d (default))",
        ),
        (
            &[("absolute", "1h")],
            "SESSIOND_IDLE_TIMEOUT (7d (default)) must not exceed \
             SESSIOND_ABSOLUTE_TIMEOUT (1h)",
        ),
        (
            &[("idle", "1week"), ("absolute", "72h")],
            "SESSIOND_IDLE_TIMEOUT (1week) must not exceed SESSIOND_ABSOLUTE_TIMEOUT (72h)",
        ),
        (
            &[("access_ttl", "0")],
            "SESSIOND_ACCESS_TTL (0) must be greater than zero",
        ),
        (
            &[("idle", "0s")],
            "SESSIOND_IDLE_TIMEOUT (0s) must be greater than zero",
        ),
        (
            &[("absolute", "0m")],
            "SESSIOND_ABSOLUTE_TIMEOUT (0m) must be greater than zero",
        ),
        (
            &[("leeway", "10m")],
            "SESSIOND_LEEWAY (10m) must be at most 5m",
        ),
        (
            &[("retention", "1m")],
            "SESSIOND_RETENTION (1m) must be at least SESSIOND_ACCESS_TTL (15m (default))",
        ),
        (
            &[("retention", "1h"), ("access_ttl", "2h")],
            "SESSIOND_RETENTION (1h) must be at least SESSIOND_ACCESS_TTL (2h)",
        ),
        (
            &[("reuse_grace", "6m")],
            "SESSIOND_REUSE_GRACE (6m) must be at most 5m",
        ),
    ];
    for (settings, expected) in cases {
        let mut raw = RawConfig::default();
        for &(setting, value) in settings {
            let field = match setting {
                "access_ttl" => &mut raw.access_ttl,
                "idle" => &mut raw.idle_timeout,
                "absolute" => &mut raw.absolute_timeout,
                "leeway" => &mut raw.leeway,
                "retention" => &mut raw.retention,
                "reuse_grace" => &mut raw.reuse_grace,
                other => unreachable!("no setting {other}"),
            };
            *field = Some(value.into());
        }
        let error = Config::from_raw(&raw).unwrap_err();
        assert!(
            error.starts_with(expected),
            "{settings:?}: {error:?} should start with {expected:?}"
        );
        assert!(!error.contains('\n'), "one line: {error:?}");
        assert!(
            !error.contains("invalid lifetimes"),
            "checked before Policy::validate: {error:?}"
        );
    }
}

#[test]
fn defaults_are_shown_in_the_short_form_they_are_written_in() {
    assert_eq!(compact_duration(Duration::from_secs(30 * 86_400)), "30d");
    assert_eq!(compact_duration(Duration::from_secs(36 * 3_600)), "36h");
    assert_eq!(compact_duration(Duration::from_secs(15 * 60)), "15m");
    assert_eq!(compact_duration(Duration::from_secs(90)), "90s");
    assert_eq!(compact_duration(Duration::ZERO), "0");
    assert_eq!(compact_duration(Duration::from_millis(1500)), "1s 500ms");
}

#[test]
fn development_without_an_issuer_warns_that_tokens_are_bound_to_the_listen_address() {
    let config = Config::from_raw(&RawConfig {
        listen: Some("127.0.0.1:9000".into()),
        ..RawConfig::default()
    })
    .unwrap();
    assert_eq!(config.issuer, "http://127.0.0.1:9000");
    let warning = config
        .warnings
        .iter()
        .find(|warning| warning.contains("SESSIOND_ISSUER"))
        .unwrap_or_else(|| panic!("an issuer warning among {:?}", config.warnings));
    for mention in [
        "http://127.0.0.1:9000",
        "SESSIOND_LISTEN",
        "invalidates",
        "set SESSIOND_ISSUER",
    ] {
        assert!(
            warning.contains(mention),
            "{warning:?} mentions {mention:?}"
        );
    }
    assert!(!warning.contains('\n'), "one line: {warning:?}");

    let config = Config::from_raw(&RawConfig {
        issuer: Some("https://sessions.example.com".into()),
        ..RawConfig::default()
    })
    .unwrap();
    assert!(
        !config
            .warnings
            .iter()
            .any(|warning| warning.contains("SESSIOND_ISSUER")),
        "no issuer warning once it is set: {:?}",
        config.warnings
    );
}

#[test]
fn a_zero_grace_window_is_allowed_and_durations_parse() {
    let raw = RawConfig {
        reuse_grace: Some("0".into()),
        access_ttl: Some("2h".into()),
        idle_timeout: Some("1h".into()),
        ..RawConfig::default()
    };
    let config = Config::from_raw(&raw).unwrap();
    assert_eq!(config.policy.reuse_grace, Duration::ZERO);
    assert_eq!(config.policy.access_ttl, Duration::from_secs(7200));
}

#[test]
fn unused_successors_are_replayed_for_an_hour_unless_configured_otherwise() {
    let config = Config::from_raw(&RawConfig::default()).unwrap();
    assert_eq!(
        config.policy.unused_successor_replay,
        Duration::from_secs(3600)
    );
    let config = Config::from_raw(&RawConfig {
        unused_successor_replay: Some("6h".into()),
        ..RawConfig::default()
    })
    .unwrap();
    assert_eq!(
        config.policy.unused_successor_replay,
        Duration::from_secs(6 * 3600)
    );
    let error = Config::from_raw(&RawConfig {
        unused_successor_replay: Some("soon".into()),
        ..RawConfig::default()
    })
    .unwrap_err();
    assert!(
        error.starts_with("SESSIOND_UNUSED_SUCCESSOR_REPLAY"),
        "{error:?}"
    );
    assert!(!error.contains('\n'), "one line: {error:?}");
}

#[test]
fn later_sources_override_earlier_ones() {
    let file = RawConfig {
        listen: Some("127.0.0.1:1".into()),
        audience: Some("a".into()),
        ..RawConfig::default()
    };
    let env = RawConfig {
        listen: Some("127.0.0.1:2".into()),
        ..RawConfig::default()
    };
    let merged = file.overlaid_with(&env);
    assert_eq!(merged.listen.as_deref(), Some("127.0.0.1:2"));
    assert_eq!(merged.audience.as_deref(), Some("a"));
}

#[test]
fn rate_limits_default_on_and_each_can_be_set_or_turned_off() {
    let config = Config::from_raw(&RawConfig::default()).unwrap();
    let limits = &config.rate_limits;
    assert!(limits.enabled);
    assert_eq!(
        limits.quotas[Limit::RefreshPerSession as usize],
        Some(Quota {
            count: 20,
            period: Duration::from_secs(300)
        })
    );
    assert_eq!(
        limits.quotas[Limit::FailedAuthPerIp as usize],
        Some(Quota {
            count: 30,
            period: Duration::from_secs(60)
        })
    );
    assert!(limits.client_ip.trusted_proxies.is_empty());

    let config = Config::from_raw(&RawConfig {
        rate_limit_per_ip: Some("1200/2m".into()),
        rate_limit_create_per_user: Some("off".into()),
        trusted_proxies: Some("10.0.0.0/8, 2001:db8::1".into()),
        client_ip_header: Some("Forwarded".into()),
        ..RawConfig::default()
    })
    .unwrap();
    let limits = &config.rate_limits;
    assert_eq!(
        limits.quotas[Limit::PerIp as usize],
        Some(Quota {
            count: 1200,
            period: Duration::from_secs(120)
        })
    );
    assert_eq!(limits.quotas[Limit::CreatePerUser as usize], None);
    assert_eq!(limits.client_ip.trusted_proxies.len(), 2);
    assert_eq!(limits.client_ip.header, ForwardedHeader::Forwarded);

    let config = Config::from_raw(&RawConfig {
        rate_limits: Some("off".into()),
        ..RawConfig::default()
    })
    .unwrap();
    assert!(!config.rate_limits.enabled);
    assert!(
        config
            .warnings
            .iter()
            .any(|warning| warning.contains("SESSIOND_RATE_LIMITS=off"))
    );
}

#[test]
fn bad_rate_limit_settings_are_refused_naming_the_variable() {
    let cases: [(RawConfig, &str); 8] = [
        (
            RawConfig {
                rate_limits: Some("sometimes".into()),
                ..RawConfig::default()
            },
            "SESSIOND_RATE_LIMITS must be on or off (got \"sometimes\")",
        ),
        (
            RawConfig {
                rate_limit_per_ip: Some("lots".into()),
                ..RawConfig::default()
            },
            "SESSIOND_RATE_LIMIT_PER_IP must be COUNT/PERIOD like 600/1m, or off (got \"lots\")",
        ),
        (
            RawConfig {
                rate_limit_refresh_per_session: Some("0/5m".into()),
                ..RawConfig::default()
            },
            "SESSIOND_RATE_LIMIT_REFRESH_PER_SESSION (0/5m) must allow at least 1 request",
        ),
        (
            RawConfig {
                rate_limit_failed_auth_per_ip: Some("30/0s".into()),
                ..RawConfig::default()
            },
            "SESSIOND_RATE_LIMIT_FAILED_AUTH_PER_IP (30/0s) must have a period between 1s and 1d",
        ),
        (
            RawConfig {
                rate_limit_admin_per_key: Some("100/fortnight".into()),
                ..RawConfig::default()
            },
            "SESSIOND_RATE_LIMIT_ADMIN_PER_KEY must be COUNT/PERIOD",
        ),
        (
            RawConfig {
                rate_limit_capacity: Some("10".into()),
                ..RawConfig::default()
            },
            "SESSIOND_RATE_LIMIT_CAPACITY must be a number of keys between 1024 and 16777216",
        ),
        (
            RawConfig {
                trusted_proxies: Some("10.0.0.0/8,10.0.0.0/99".into()),
                ..RawConfig::default()
            },
            "SESSIOND_TRUSTED_PROXIES: \"10.0.0.0/99\" has a prefix length over 32",
        ),
        (
            RawConfig {
                client_ip_header: Some("x-real-ip".into()),
                ..RawConfig::default()
            },
            "SESSIOND_CLIENT_IP_HEADER must be x-forwarded-for or forwarded",
        ),
    ];
    for (raw, expected) in cases {
        let error = Config::from_raw(&raw).unwrap_err();
        assert!(
            error.starts_with(expected),
            "{error:?} should start with {expected:?}"
        );
        assert!(!error.contains('\n'), "one line: {error:?}");
    }
}

#[test]
fn admin_keys_take_an_optional_scope_and_a_bad_one_stops_start_up() {
    let with = |text: String| {
        Config::from_raw(&RawConfig {
            admin_keys: Some(text.into()),
            ..RawConfig::default()
        })
    };
    let config = with(format!("{k},{k}x:read, {k}y:revoke,{k}z:full", k = key())).unwrap();
    let scopes: Vec<AdminScope> = config.admin_keys.iter().map(|key| key.scope).collect();
    assert_eq!(
        scopes,
        [
            AdminScope::Full,
            AdminScope::Read,
            AdminScope::Revoke,
            AdminScope::Full
        ]
    );
    assert_eq!(config.admin_keys[1].key, format!("{}x", key()));
    let error = with(format!("{}:reed", key())).unwrap_err();
    assert!(error.contains("key #1 ends in an unknown scope"), "{error}");
    assert!(!error.contains("reed"), "{error}");
    let error = with(format!("{},short:read", key())).unwrap_err();
    assert!(error.contains("key #2 is shorter than 32"), "{error}");
}

#[test]
fn roles_are_read_from_the_one_line_form_or_the_file_table() {
    let from_env = Config::from_raw(&RawConfig {
        roles: Some(RolesSetting::Text(
            "editor=notes:read|notes:write; viewer=notes:read".into(),
        )),
        ..RawConfig::default()
    })
    .unwrap();
    assert_eq!(
        from_env.roles.permissions_of("editor"),
        ["notes:read", "notes:write"]
    );
    assert_eq!(from_env.roles.permissions_of("viewer"), ["notes:read"]);

    let file: RawConfig =
        toml::from_str("[roles]\neditor = [\"notes:read\", \"notes:write\"]\n").unwrap();
    let from_file = Config::from_raw(&file).unwrap();
    assert_eq!(
        from_file.roles.permissions_of("editor"),
        ["notes:read", "notes:write"]
    );
    assert!(from_file.roles.permissions_of("viewer").is_empty());

    for (bad, expected) in [
        (
            "editor",
            "SESSIOND_ROLES: \"editor\" must be ROLE=PERMISSION",
        ),
        ("a=x;a=y", "SESSIOND_ROLES: role \"a\" is given twice"),
        ("a b=x", "SESSIOND_ROLES: \"a b\" is not a valid"),
    ] {
        let error = Config::from_raw(&RawConfig {
            roles: Some(RolesSetting::Text(bad.into())),
            ..RawConfig::default()
        })
        .unwrap_err();
        assert!(error.starts_with(expected), "{error}");
    }
    let error = toml::from_str::<RawConfig>("roles = 3\n").unwrap_err();
    assert!(error.message().contains("roles must be a table"), "{error}");
}

#[test]
fn anomaly_policy_defaults_to_notify_on_every_signal() {
    let config = Config::from_raw(&RawConfig::default()).unwrap();
    assert_eq!(config.anomaly, AnomalySettings::default());
    assert_eq!(config.anomaly.policy, AnomalyPolicy::Notify);
    let config = Config::from_raw(&RawConfig {
        anomaly_policy: Some("revoke".into()),
        anomaly_checks: Some("os, network".into()),
        ..RawConfig::default()
    })
    .unwrap();
    assert_eq!(config.anomaly.policy, AnomalyPolicy::Revoke);
    assert_eq!(config.anomaly.checks, [Signal::Network, Signal::Os]);
    let error = Config::from_raw(&RawConfig {
        anomaly_policy: Some("block".into()),
        ..RawConfig::default()
    })
    .unwrap_err();
    assert!(
        error.starts_with("SESSIOND_ANOMALY_POLICY must be"),
        "{error}"
    );
    let error = Config::from_raw(&RawConfig {
        anomaly_checks: Some("network,ip".into()),
        ..RawConfig::default()
    })
    .unwrap_err();
    assert!(
        error.starts_with("SESSIOND_ANOMALY_CHECKS must list"),
        "{error}"
    );
}

#[test]
fn connection_and_stream_limits_have_defaults_and_refuse_bad_values_naming_the_variable() {
    let config = Config::from_raw(&RawConfig::default()).unwrap();
    assert_eq!(config.connections, ConnectionSettings::default());
    assert_eq!(config.connections.header_timeout, Duration::from_secs(10));
    assert_eq!(config.connections.body_timeout, Duration::from_secs(20));
    assert_eq!(
        config.connections.keep_alive_timeout,
        Duration::from_secs(75)
    );
    assert_eq!(config.connections.max_connections, 4096);
    assert_eq!(
        config.stream_limits,
        StreamLimits {
            total: 2048,
            per_user: 16
        }
    );

    let config = Config::from_raw(&RawConfig {
        header_timeout: Some("2s".into()),
        body_timeout: Some("500ms".into()),
        keep_alive_timeout: Some("2m".into()),
        max_connections: Some("100".into()),
        max_streams: Some("50".into()),
        max_streams_per_user: Some("3".into()),
        ..RawConfig::default()
    })
    .unwrap();
    assert_eq!(
        config.connections,
        ConnectionSettings {
            header_timeout: Duration::from_secs(2),
            body_timeout: Duration::from_millis(500),
            keep_alive_timeout: Duration::from_secs(120),
            max_connections: 100,
        }
    );
    assert_eq!(
        config.stream_limits,
        StreamLimits {
            total: 50,
            per_user: 3
        }
    );

    let cases: [(RawConfig, &str); 6] = [
        (
            RawConfig {
                header_timeout: Some("0".into()),
                ..RawConfig::default()
            },
            "SESSIOND_HEADER_TIMEOUT must be between 100ms and 1h (got 0)",
        ),
        (
            RawConfig {
                body_timeout: Some("soon".into()),
                ..RawConfig::default()
            },
            "SESSIOND_BODY_TIMEOUT must be a duration",
        ),
        (
            RawConfig {
                keep_alive_timeout: Some("2h".into()),
                ..RawConfig::default()
            },
            "SESSIOND_KEEP_ALIVE_TIMEOUT must be between 100ms and 1h (got 2h)",
        ),
        (
            RawConfig {
                max_connections: Some("0".into()),
                ..RawConfig::default()
            },
            "SESSIOND_MAX_CONNECTIONS must be a whole number from 1 to 1000000 (got \"0\")",
        ),
        (
            RawConfig {
                max_streams: Some("lots".into()),
                ..RawConfig::default()
            },
            "SESSIOND_MAX_STREAMS must be a whole number",
        ),
        (
            RawConfig {
                max_streams_per_user: Some("-1".into()),
                ..RawConfig::default()
            },
            "SESSIOND_MAX_STREAMS_PER_USER must be a whole number",
        ),
    ];
    for (raw, expected) in cases {
        let error = Config::from_raw(&raw).unwrap_err();
        assert!(
            error.starts_with(expected),
            "{error:?} should start with {expected:?}"
        );
        assert!(!error.contains('\n'), "one line: {error:?}");
    }
}

#[test]
fn introspection_clients_are_id_and_secret_pairs_and_a_bad_one_stops_start_up() {
    let with = |text: String| {
        Config::from_raw(&RawConfig {
            introspection_clients: Some(text.into()),
            ..RawConfig::default()
        })
    };
    // The secret is everything after the first `:`, so it may hold `:` itself.
    let config = with(format!("notes-api:{k}, billing:{k}:x", k = key())).unwrap();
    assert_eq!(
        config.introspection_clients,
        [
            IntrospectionClient {
                client_id: "notes-api".into(),
                secret: key(),
            },
            IntrospectionClient {
                client_id: "billing".into(),
                secret: format!("{}:x", key()),
            },
        ]
    );
    assert!(
        with(String::new())
            .unwrap()
            .introspection_clients
            .is_empty()
    );
    for (text, expected) in [
        (
            key(),
            "SESSIOND_INTROSPECTION_CLIENTS: entry #1 must be CLIENT_ID:SECRET",
        ),
        (
            format!(":{}", key()),
            "SESSIOND_INTROSPECTION_CLIENTS: entry #1 must start with a client id",
        ),
        (
            format!("a b:{}", key()),
            "SESSIOND_INTROSPECTION_CLIENTS: entry #1 must start with a client id",
        ),
        (
            format!("api:{},api2:tiny", key()),
            "SESSIOND_INTROSPECTION_CLIENTS: the secret of \"api2\" is shorter than 32",
        ),
        (
            format!("api:{k},api:{k}", k = key()),
            "SESSIOND_INTROSPECTION_CLIENTS: client id \"api\" is given twice",
        ),
    ] {
        let error = with(text).unwrap_err();
        assert!(
            error.starts_with(expected),
            "{error:?} should start with {expected:?}"
        );
        assert!(!error.contains(&key()), "no secret in {error:?}");
        assert!(!error.contains("tiny"), "no secret in {error:?}");
    }
}

#[test]
fn debug_output_hides_introspection_secrets() {
    let raw = RawConfig {
        introspection_clients: Some(format!("notes-api:{}", key()).into()),
        ..RawConfig::default()
    };
    assert!(!format!("{raw:?}").contains(&key()));
    let config = Config::from_raw(&raw).unwrap();
    let shown = format!("{config:?}");
    assert!(!shown.contains(&key()), "{shown}");
    assert!(shown.contains("notes-api"), "{shown}");
}

#[test]
fn debug_output_hides_admin_keys() {
    let config = Config::from_raw(&RawConfig {
        admin_keys: Some(key().into()),
        ..RawConfig::default()
    })
    .unwrap();
    assert!(!format!("{config:?}").contains(&key()));
}

#[test]
fn raw_debug_output_hides_every_secret_and_shows_the_rest() {
    let admin_key = format!("{}:read", "a".repeat(MIN_ADMIN_KEY_LEN));
    let client_secret = "s".repeat(MIN_CLIENT_SECRET_LEN);
    let master_key = "bWFzdGVyLWtleS1tYXN0ZXIta2V5LW1hc3Rlci1rZXk=";
    let previous_key = "cHJldmlvdXMta2V5LXByZXZpb3VzLWtleS1wcmV2aW8=";
    let raw = RawConfig {
        listen: Some("127.0.0.1:9999".into()),
        database_url: Some("postgres://app:pg-password-1@db:5432/sessiond".into()),
        admin_keys: Some(admin_key.as_str().into()),
        introspection_clients: Some(format!("notes-api:{client_secret}").into()),
        master_key: Some(master_key.into()),
        master_key_previous: Some(previous_key.into()),
        issuer: Some("https://auth.example".into()),
        ..RawConfig::default()
    };
    let shown = format!("{raw:?}");
    for secret in [
        admin_key.as_str(),
        &"a".repeat(MIN_ADMIN_KEY_LEN),
        &client_secret,
        master_key,
        previous_key,
        "pg-password-1",
    ] {
        assert!(!shown.contains(secret), "{secret:?} in {shown}");
    }
    for visible in [
        "127.0.0.1:9999",
        "postgres://app:***@db:5432/sessiond",
        "https://auth.example",
    ] {
        assert!(shown.contains(visible), "{visible:?} not in {shown}");
    }
    // The values are kept as written: only their `Debug` output hides them.
    let database_url = raw.database_url.as_ref().map(DatabaseUrl::expose);
    assert_eq!(
        database_url,
        Some("postgres://app:pg-password-1@db:5432/sessiond")
    );
    let admin_keys = raw.admin_keys.as_ref().map(SecretSetting::expose);
    assert_eq!(admin_keys, Some(admin_key.as_str()));
}
