//! A PostgreSQL schema of its own per test, on the server `SESSIOND_TEST_DATABASE_URL` names.

/// The PostgreSQL server of the suites' PostgreSQL halves: `SESSIOND_TEST_DATABASE_URL`, when
/// it is set and not blank.
pub fn postgres_url() -> Option<String> {
    std::env::var("SESSIOND_TEST_DATABASE_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
}

/// A schema of its own on the test PostgreSQL server. Connections made through [`url_on`]
/// carry the schema's name as their application name, so that dropping it can end them
/// before it drops the schema.
///
/// [`url_on`]: PgSchema::url_on
#[derive(Debug)]
pub struct PgSchema {
    base: String,
    name: String,
}

impl PgSchema {
    /// Creates `PREFIX_<random>` on the server at `base`.
    pub async fn create(base: &str, prefix: &str) -> Self {
        use sqlx::Connection as _;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let mut connection = sqlx::PgConnection::connect(base)
            .await
            .expect("connect to PostgreSQL");
        sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
            .execute(&mut connection)
            .await
            .expect("create schema");
        connection.close().await.expect("close");
        Self {
            base: base.to_owned(),
            name,
        }
    }

    /// `url` (the server's, or a proxy's in front of it) using this schema.
    pub fn url_on(&self, url: &str) -> String {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!(
            "{url}{separator}options=-c%20search_path%3D{0}&application_name={0}",
            self.name
        )
    }

    /// The server's URL using this schema.
    pub fn url(&self) -> String {
        self.url_on(&self.base)
    }

    /// A connection to this schema, straight to the server.
    pub async fn connect(&self) -> sqlx::PgConnection {
        use sqlx::Connection as _;
        sqlx::PgConnection::connect(&self.url())
            .await
            .expect("connect to PostgreSQL")
    }

    /// Runs a scalar query on this schema.
    pub async fn scalar(&self, sql: &str) -> i64 {
        use sqlx::Connection as _;
        let mut connection = self.connect().await;
        let value: i64 = sqlx::query_scalar(sql)
            .fetch_one(&mut connection)
            .await
            .unwrap_or_else(|error| panic!("{sql}: {error}"));
        connection.close().await.expect("close");
        value
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (base, name) = (self.base.clone(), self.name.clone());
        // A thread of its own: Drop cannot await, and the test's runtime may be the single
        // thread this runs on.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                use sqlx::Connection as _;
                let mut connection = sqlx::PgConnection::connect(&base).await?;
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                     WHERE application_name = $1 AND pid <> pg_backend_pid()",
                )
                .bind(&name)
                .execute(&mut connection)
                .await?;
                sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .execute(&mut connection)
                    .await?;
                connection.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test schema {}", self.name);
        }
    }
}
