//! The PostgreSQL store's tables: created on first use and migrated forward, one numbered step
//! at a time, under a transaction-scoped advisory lock so that processes starting together
//! do it once. The schema's version is the row `schema_version` of `geyser_meta`.
//! Touches only the schema it is given.

use tokio_postgres::{Client, Transaction};

/// The schema version this Geyser writes and reads.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// `MIGRATIONS[i]` takes a schema from version `i` to `i + 1`; `{s}` stands for the quoted
/// schema name. Version 0 is a schema with no Geyser tables. Append steps; never edit one.
const MIGRATIONS: [&str; 2] = [
    // 1: documents (the JSON as jsonb, the fields that `list`, the sweep and purge filter on as
    // columns; uuids compared byte by byte, as in every store) and named leases.
    "CREATE TABLE {s}.geyser_documents (
        uuid       text COLLATE \"C\" PRIMARY KEY,
        version    bigint           NOT NULL,
        status     text COLLATE \"C\" NOT NULL,
        job_type   text COLLATE \"C\" NOT NULL,
        updated_at double precision NOT NULL,
        expires_at double precision,
        doc        jsonb            NOT NULL
    );
    CREATE INDEX geyser_documents_status ON {s}.geyser_documents (status, uuid);
    CREATE INDEX geyser_documents_job_type ON {s}.geyser_documents (job_type, uuid);
    CREATE INDEX geyser_documents_expires ON {s}.geyser_documents (expires_at) WHERE expires_at IS NOT NULL;
    CREATE INDEX geyser_documents_queued_since ON {s}.geyser_documents (updated_at, uuid)
        WHERE status = 'queued';
    CREATE TABLE {s}.geyser_leases (
        name       text COLLATE \"C\" PRIMARY KEY,
        holder     text             NOT NULL,
        expires_at double precision NOT NULL,
        version    bigint           NOT NULL
    );",
    // 2: live workers' registrations (`Store::register_worker`), one row per worker, as JSON text.
    "CREATE TABLE {s}.geyser_workers (
        id         text COLLATE \"C\" PRIMARY KEY,
        expires_at double precision NOT NULL,
        record     text             NOT NULL
    );",
];

/// First key of the advisory lock taken while creating or migrating a schema ("geys");
/// the second is a hash of the schema name.
pub const LOCK_CLASS: i32 = 0x6765_7973;

/// The schema name as SQL writes it.
pub fn quoted(schema: &str) -> String {
    format!("\"{}\"", schema.replace('"', "\"\""))
}

fn newer(schema: &str, found: i64) -> String {
    format!(
        "schema {schema:?} is at version {found}, newer than this Geyser knows (version {SCHEMA_VERSION}): \
         a newer Geyser has migrated it; upgrade Geyser here too, or name another schema with ?schema=NAME"
    )
}

/// Why a schema could not be checked or migrated.
#[derive(Debug)]
pub struct SchemaError {
    pub reason: String,
    /// The connection failed (the server may answer later), rather than the server refusing.
    pub connection_lost: bool,
}

impl SchemaError {
    fn refused(reason: String) -> Self {
        Self { reason, connection_lost: false }
    }
}

fn failed(step: &str) -> impl FnOnce(tokio_postgres::Error) -> SchemaError + '_ {
    move |e| SchemaError {
        reason: format!("{step}: {}", super::describe(&e)),
        connection_lost: super::connection_lost(&e),
    }
}

/// The stored schema version, or None when the schema has no Geyser tables yet. Reads only.
async fn stored_version(client: &Client, schema: &str) -> Result<Option<i64>, SchemaError> {
    let exists = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = $1 AND tablename = 'geyser_meta')",
            &[&schema],
        )
        .await
        .map_err(failed("read the schema version"))?;
    if !exists.get::<_, bool>(0) {
        return Ok(None);
    }
    let sql = format!("SELECT value FROM {}.geyser_meta WHERE key = 'schema_version'", quoted(schema));
    let row = client.query_opt(&sql, &[]).await.map_err(failed("read the schema version"))?;
    Ok(Some(row.map_or(0, |r| r.get(0))))
}

/// Creates or migrates `schema` to `SCHEMA_VERSION`, or says why it cannot (a newer schema).
/// A schema already current costs two reads and takes no lock.
pub async fn ensure(client: &mut Client, schema: &str) -> Result<(), SchemaError> {
    match stored_version(client, schema).await? {
        Some(SCHEMA_VERSION) => return Ok(()),
        Some(found) if found > SCHEMA_VERSION => return Err(SchemaError::refused(newer(schema, found))),
        _ => {}
    }
    let tx = client.transaction().await.map_err(failed("begin the schema migration"))?;
    migrate(&tx, schema).await?;
    tx.commit().await.map_err(failed("commit the schema migration"))
}

/// Inside one transaction: waits (at most a minute) for any other process doing the same,
/// then applies the steps the schema lacks.
async fn migrate(tx: &Transaction<'_>, schema: &str) -> Result<(), SchemaError> {
    let s = quoted(schema);
    tx.batch_execute("SET LOCAL lock_timeout = '60s'").await.map_err(failed("set the lock timeout"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", &[&LOCK_CLASS, &schema])
        .await
        .map_err(failed("wait for another process creating the schema"))?;
    // Only a missing schema is created: `CREATE SCHEMA IF NOT EXISTS` needs the right to create
    // schemas in the database even when the schema exists (as one made by an administrator does).
    let exists = tx
        .query_one("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = $1)", &[&schema])
        .await
        .map_err(failed("look for the schema"))?;
    if !exists.get::<_, bool>(0) {
        tx.batch_execute(&format!("CREATE SCHEMA {s}")).await.map_err(failed("create the schema"))?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {s}.geyser_meta (key text PRIMARY KEY, value bigint NOT NULL)"
    ))
    .await
    .map_err(failed("create the schema version table"))?;
    let found = stored_version(tx.client(), schema).await?.unwrap_or(0);
    if found > SCHEMA_VERSION {
        return Err(SchemaError::refused(newer(schema, found)));
    }
    for (from, step) in MIGRATIONS.iter().enumerate().skip(usize::try_from(found).unwrap_or(0)) {
        let what = format!("migrate schema {schema:?} from version {from} to {}", from + 1);
        tx.batch_execute(&step.replace("{s}", &s)).await.map_err(failed(&what))?;
    }
    tx.execute(
        &format!(
            "INSERT INTO {s}.geyser_meta (key, value) VALUES ('schema_version', $1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(failed("record the schema version"))?;
    Ok(())
}
