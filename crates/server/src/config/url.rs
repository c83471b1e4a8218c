//! Database URLs: which store one names, and the form of one fit for messages and logs.

/// `url` with any password replaced, for messages and logs.
pub fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Whether `url` names a PostgreSQL database rather than a SQLite file.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_password("postgres://app:s3cret@db:5432/sessiond"),
            "postgres://app:***@db:5432/sessiond"
        );
        assert_eq!(
            redact_password("postgres://app@db/x"),
            "postgres://app@db/x"
        );
        assert_eq!(
            redact_password("sqlite://sessiond.db"),
            "sqlite://sessiond.db"
        );
    }
}
