//! The two migration folders must produce the same schema. Each backend's schema is reduced to
//! one shared vocabulary (columns, types, nullability, keys, indexes) and compared: SQLite with
//! the committed snapshot on every run, and PostgreSQL with SQLite when PostgreSQL is available.
//! After a deliberate schema change: `UPDATE_SCHEMA_SNAPSHOT=1 cargo test schema`.

use std::collections::BTreeSet;

use creditguard::db::{run_migrations, DatabaseTarget, DbConnection};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::helpers::TestDatabase;

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct SqliteColumn {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    #[diesel(column_name = type_)]
    type_: String,
    #[diesel(sql_type = BigInt)]
    notnull: i64,
    #[diesel(sql_type = BigInt)]
    pk: i64,
}

#[derive(QueryableByName)]
struct SqliteIndex {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    unique: i64,
    #[diesel(sql_type = Text)]
    origin: String,
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    line: String,
}

fn normal_type(declared: &str) -> String {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "bigint" | "int8" => "bigint".into(),
        "text" => "text".into(),
        "timestamp" | "timestamp without time zone" => "timestamp".into(),
        "boolean" | "bool" => "boolean".into(),
        other => format!("UNMAPPED {other}"),
    }
}

fn sqlite_schema(conn: &mut diesel::SqliteConnection) -> BTreeSet<String> {
    let mut lines = BTreeSet::new();
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '__diesel_schema_migrations'",
    )
    .load(conn)
    .unwrap();
    for Name { name: table } in tables {
        let columns: Vec<SqliteColumn> = diesel::sql_query(format!(
            "SELECT name, type AS type_, \"notnull\", pk FROM pragma_table_info('{table}')"
        ))
        .load(conn)
        .unwrap();
        let mut pk = Vec::new();
        for c in columns {
            // SQLite reports primary-key columns as nullable unless declared NOT NULL.
            let not_null = c.notnull == 1 || c.pk > 0;
            lines.insert(format!(
                "column {table}.{} {} {}",
                c.name,
                normal_type(&c.type_),
                if not_null { "not null" } else { "null" }
            ));
            if c.pk > 0 {
                pk.push((c.pk, c.name));
            }
        }
        pk.sort();
        let pk: Vec<String> = pk.into_iter().map(|(_, n)| n).collect();
        lines.insert(format!("primary key {table}({})", pk.join(",")));
        let indexes: Vec<SqliteIndex> = diesel::sql_query(format!(
            "SELECT name, \"unique\", origin FROM pragma_index_list('{table}')"
        ))
        .load(conn)
        .unwrap();
        for index in indexes.into_iter().filter(|i| i.origin != "pk") {
            let cols: Vec<Name> = diesel::sql_query(format!(
                "SELECT name FROM pragma_index_info('{}') ORDER BY seqno",
                index.name
            ))
            .load(conn)
            .unwrap();
            let cols: Vec<String> = cols.into_iter().map(|c| c.name).collect();
            let kind = if index.unique == 1 {
                "unique index"
            } else {
                "index"
            };
            lines.insert(format!("{kind} {table}({})", cols.join(",")));
        }
    }
    lines
}

fn postgres_schema(conn: &mut diesel::PgConnection) -> BTreeSet<String> {
    let queries = [
        "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' ||
                CASE is_nullable WHEN 'NO' THEN 'not null' ELSE 'null' END AS line
           FROM information_schema.columns
          WHERE table_schema = 'public' AND table_name <> '__diesel_schema_migrations'",
        "SELECT CASE WHEN x.indisprimary THEN 'primary key '
                     WHEN x.indisunique THEN 'unique index ' ELSE 'index ' END
                || tc.relname || '(' || string_agg(a.attname, ',' ORDER BY k.ord) || ')' AS line
           FROM pg_index x
           JOIN pg_class tc ON tc.oid = x.indrelid
           JOIN pg_namespace n ON n.oid = tc.relnamespace
           CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_attribute a ON a.attrelid = tc.oid AND a.attnum = k.attnum
          WHERE n.nspname = 'public' AND tc.relname <> '__diesel_schema_migrations'
          GROUP BY x.indexrelid, x.indisprimary, x.indisunique, tc.relname",
    ];
    let mut lines = BTreeSet::new();
    for query in queries {
        let rows: Vec<Line> = diesel::sql_query(query).load(conn).unwrap();
        for Line { line } in rows {
            // Normalise the column type the same way as SQLite's.
            let line = match line.strip_prefix("column ") {
                Some(rest) => {
                    let (name, rest) = rest.split_once(' ').unwrap();
                    let (ty, nullability) = rest
                        .rsplit_once(if rest.ends_with("not null") {
                            " not null"
                        } else {
                            " null"
                        })
                        .map(|(t, _)| {
                            (
                                t,
                                if rest.ends_with("not null") {
                                    "not null"
                                } else {
                                    "null"
                                },
                            )
                        })
                        .unwrap();
                    format!("column {name} {} {nullability}", normal_type(ty))
                }
                None => line,
            };
            lines.insert(line);
        }
    }
    lines
}

fn migrated(url: &str) -> DbConnection {
    let mut conn = DatabaseTarget::parse(url).unwrap().establish().unwrap();
    run_migrations(&mut conn).unwrap();
    conn
}

fn describe(conn: &mut DbConnection) -> BTreeSet<String> {
    match conn {
        DbConnection::Sqlite(c) => sqlite_schema(c),
        DbConnection::Pg(c) => postgres_schema(c),
    }
}

#[test]
fn both_migration_folders_produce_the_same_schema() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite_url = format!("sqlite://{}", dir.path().join("schema.db").display());
    let sqlite = describe(&mut migrated(&sqlite_url));
    assert!(
        sqlite.iter().all(|l| !l.contains("UNMAPPED")),
        "{sqlite:#?}"
    );

    let snapshot_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schema.snapshot");
    let text = sqlite.iter().cloned().collect::<Vec<_>>().join("\n") + "\n";
    if std::env::var_os("UPDATE_SCHEMA_SNAPSHOT").is_some() {
        std::fs::write(&snapshot_path, &text).unwrap();
    }
    let snapshot = std::fs::read_to_string(&snapshot_path)
        .expect("tests/schema.snapshot (UPDATE_SCHEMA_SNAPSHOT=1 writes it)");
    assert_eq!(
        text, snapshot,
        "SQLite's schema differs from tests/schema.snapshot"
    );

    if TestDatabase::is_postgres() {
        let (db, url) = TestDatabase::create();
        let postgres = describe(&mut migrated(&url));
        drop(db);
        let only_sqlite: Vec<_> = sqlite.difference(&postgres).collect();
        let only_postgres: Vec<_> = postgres.difference(&sqlite).collect();
        assert!(
            only_sqlite.is_empty() && only_postgres.is_empty(),
            "schemas differ.\nonly in SQLite: {only_sqlite:#?}\nonly in PostgreSQL: {only_postgres:#?}"
        );
    }
}
