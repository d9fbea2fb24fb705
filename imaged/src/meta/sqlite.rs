//! `MetaStore` in SQLite (`$DATA/carte.db`, WAL, synchronous FULL, foreign keys on), with
//! a `schema_migrations` table: each migration runs once, in order, in a transaction.
//!
//! Layer metadata is kept as JSON in the version row (it is only ever read whole);
//! artefacts get their own rows so gc can ask which blobs are referenced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension};

use super::{MetaError, MetaStore, TokenRecord};
use crate::model::{Artefact, Digest, Image, NewVersion, Project, Version, VersionSpec};

/// Migrations in order; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE images (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    owner TEXT NOT NULL,
    project TEXT,
    expires_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE TABLE versions (
    image TEXT NOT NULL REFERENCES images(name) ON DELETE CASCADE,
    number INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    layer TEXT NOT NULL,
    PRIMARY KEY (image, number)
);
CREATE TABLE artefacts (
    image TEXT NOT NULL,
    number INTEGER NOT NULL,
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (image, number, name),
    FOREIGN KEY (image, number) REFERENCES versions(image, number) ON DELETE CASCADE
);
CREATE INDEX artefacts_sha256 ON artefacts(sha256);
CREATE TABLE projects (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
CREATE TABLE members (
    project TEXT NOT NULL REFERENCES projects(name) ON DELETE CASCADE,
    user TEXT NOT NULL,
    PRIMARY KEY (project, user)
);
CREATE TABLE tokens (
    hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"#,
    r#"
-- Version numbers of a deleted image are never reused by a new image of that name, so
-- name@N keeps meaning the same bytes (or nothing) forever.
CREATE TABLE image_tombstones (
    name TEXT PRIMARY KEY,
    last_version INTEGER NOT NULL
);
-- Which blobs were sent to which image: a version may only name those.
CREATE TABLE uploads (
    image TEXT NOT NULL REFERENCES images(name) ON DELETE CASCADE,
    sha256 TEXT NOT NULL,
    uploaded_at INTEGER NOT NULL,
    PRIMARY KEY (image, sha256)
);
"#,
];

#[derive(Debug)]
pub struct SqliteMetaStore {
    conn: Mutex<Connection>,
}

fn sql(step: &'static str) -> impl FnOnce(rusqlite::Error) -> MetaError {
    move |source| MetaError::Sqlite { step, source }
}

fn corrupt(table: &'static str, detail: impl ToString) -> MetaError {
    MetaError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

type ImageRow = (String, String, String, Option<String>, Option<u64>, u64);

fn image_from_row(r: ImageRow) -> Result<Image, MetaError> {
    let (name, kind, owner, project, expires_at, created_at) = r;
    Ok(Image {
        kind: kind.parse().map_err(|e| corrupt("images", e))?,
        name,
        owner,
        project,
        expires_at,
        created_at,
    })
}

const IMAGE_COLS: &str = "name, kind, owner, project, expires_at, created_at";

fn read_image_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ImageRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

impl SqliteMetaStore {
    /// Opens or creates the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> Result<SqliteMetaStore, MetaError> {
        let conn = Connection::open(path).map_err(sql("open"))?;
        Self::init(conn)
    }

    /// A private in-memory database (tests).
    pub fn open_in_memory() -> Result<SqliteMetaStore, MetaError> {
        Self::init(Connection::open_in_memory().map_err(sql("open"))?)
    }

    fn init(mut conn: Connection) -> Result<SqliteMetaStore, MetaError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql("set WAL"))?;
        // FULL: a recorded version survives power loss, not only a crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql("set synchronous"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql("enable foreign keys"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sql("set busy timeout"))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version INTEGER PRIMARY KEY,
                applied_at INTEGER NOT NULL DEFAULT (strftime('%s','now'))
            )",
        )
        .map_err(sql("create schema_migrations"))?;
        let applied: i64 = conn
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |r| r.get(0),
            )
            .map_err(sql("read schema version"))?;
        for (i, m) in MIGRATIONS.iter().enumerate() {
            let version = i as i64 + 1;
            if version <= applied {
                continue;
            }
            let tx = conn.transaction().map_err(sql("begin migration"))?;
            tx.execute_batch(m).map_err(sql("apply migration"))?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES (?1)",
                [version],
            )
            .map_err(sql("record migration"))?;
            tx.commit().map_err(sql("commit migration"))?;
        }
        Ok(SqliteMetaStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // SQLite transactions roll back on drop, so a poisoned lock holds a sound connection.
        match self.conn.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn load_versions(
        conn: &Connection,
        image: &str,
        only: Option<u32>,
    ) -> Result<Vec<Version>, MetaError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT number, created_at, layer FROM versions
                 WHERE image = ?1 AND (?2 IS NULL OR number = ?2) ORDER BY number",
            )
            .map_err(sql("prepare versions"))?;
        let rows = stmt
            .query_map(params![image, only], |r| {
                Ok((
                    r.get::<_, u32>(0)?,
                    r.get::<_, u64>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(sql("query versions"))?;
        let mut out = Vec::new();
        for row in rows {
            let (number, created_at, layer) = row.map_err(sql("read version"))?;
            out.push(Version {
                image: image.to_string(),
                number,
                created_at,
                layer: serde_json::from_str(&layer).map_err(|e| corrupt("versions", e))?,
                artefacts: Self::load_artefacts(conn, image, number)?,
            });
        }
        Ok(out)
    }

    fn load_artefacts(
        conn: &Connection,
        image: &str,
        number: u32,
    ) -> Result<BTreeMap<crate::model::ArtefactName, Artefact>, MetaError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT name, sha256, size FROM artefacts WHERE image = ?1 AND number = ?2",
            )
            .map_err(sql("prepare artefacts"))?;
        let rows = stmt
            .query_map(params![image, number], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u64>(2)?,
                ))
            })
            .map_err(sql("query artefacts"))?;
        let mut out = BTreeMap::new();
        for row in rows {
            let (name, sha, size) = row.map_err(sql("read artefact"))?;
            out.insert(
                name.parse().map_err(|e| corrupt("artefacts", e))?,
                Artefact {
                    sha256: sha.parse().map_err(|e| corrupt("artefacts", e))?,
                    size,
                },
            );
        }
        Ok(out)
    }
}

impl MetaStore for SqliteMetaStore {
    fn create_image(&self, image: &Image) -> Result<(), MetaError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO images (name, kind, owner, project, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                image.name,
                image.kind.as_str(),
                image.owner,
                image.project,
                image.expires_at,
                image.created_at
            ],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                MetaError::Exists(format!("image {}", image.name))
            } else {
                MetaError::Sqlite {
                    step: "insert image",
                    source: e,
                }
            }
        })?;
        Ok(())
    }

    fn image(&self, name: &str) -> Result<Option<Image>, MetaError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                &format!("SELECT {IMAGE_COLS} FROM images WHERE name = ?1"),
                [name],
                read_image_row,
            )
            .optional()
            .map_err(sql("select image"))?;
        row.map(image_from_row).transpose()
    }

    fn images(&self) -> Result<Vec<Image>, MetaError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(&format!("SELECT {IMAGE_COLS} FROM images ORDER BY name"))
            .map_err(sql("prepare images"))?;
        let rows = stmt
            .query_map([], read_image_row)
            .map_err(sql("query images"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(image_from_row(row.map_err(sql("read image"))?)?);
        }
        Ok(out)
    }

    fn delete_image(&self, name: &str) -> Result<bool, MetaError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(sql("begin delete"))?;
        tx.execute(
            "INSERT INTO image_tombstones (name, last_version)
             SELECT ?1, MAX(number) FROM versions WHERE image = ?1
             HAVING MAX(number) IS NOT NULL
             ON CONFLICT(name) DO UPDATE SET last_version = MAX(last_version, excluded.last_version)",
            [name],
        )
        .map_err(sql("record tombstone"))?;
        // Versions and artefacts go with it (ON DELETE CASCADE).
        let n = tx
            .execute("DELETE FROM images WHERE name = ?1", [name])
            .map_err(sql("delete image"))?;
        tx.commit().map_err(sql("commit delete"))?;
        Ok(n > 0)
    }

    fn add_version(
        &self,
        image: &str,
        new: &NewVersion,
        now: u64,
    ) -> Result<Option<Version>, MetaError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(sql("begin version"))?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM images WHERE name = ?1", [image], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("check image"))?;
        if exists.is_none() {
            return Ok(None);
        }
        let number: u32 = tx
            .query_row(
                "SELECT MAX(
                    (SELECT COALESCE(MAX(number), 0) FROM versions WHERE image = ?1),
                    (SELECT COALESCE(MAX(last_version), 0) FROM image_tombstones WHERE name = ?1)
                 ) + 1",
                [image],
                |r| r.get(0),
            )
            .map_err(sql("next version number"))?;
        let layer = serde_json::to_string(&new.layer).map_err(|e| corrupt("versions", e))?;
        tx.execute(
            "INSERT INTO versions (image, number, created_at, layer) VALUES (?1, ?2, ?3, ?4)",
            params![image, number, now, layer],
        )
        .map_err(sql("insert version"))?;
        for (name, a) in &new.artefacts {
            tx.execute(
                "INSERT INTO artefacts (image, number, name, sha256, size)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![image, number, name.as_str(), a.sha256.as_str(), a.size],
            )
            .map_err(sql("insert artefact"))?;
        }
        tx.commit().map_err(sql("commit version"))?;
        Ok(Some(Version {
            image: image.to_string(),
            number,
            created_at: now,
            layer: new.layer.clone(),
            artefacts: new.artefacts.clone(),
        }))
    }

    fn versions(&self, image: &str) -> Result<Vec<Version>, MetaError> {
        Self::load_versions(&self.lock(), image, None)
    }

    fn version(&self, image: &str, spec: VersionSpec) -> Result<Option<Version>, MetaError> {
        let conn = self.lock();
        let number = match spec {
            VersionSpec::Exact(n) => n,
            VersionSpec::Latest => {
                let max: Option<u32> = conn
                    .query_row(
                        "SELECT MAX(number) FROM versions WHERE image = ?1",
                        [image],
                        |r| r.get(0),
                    )
                    .map_err(sql("latest version"))?;
                match max {
                    Some(n) => n,
                    None => return Ok(None),
                }
            }
        };
        Ok(Self::load_versions(&conn, image, Some(number))?.pop())
    }

    fn referenced_blobs(&self) -> Result<BTreeSet<Digest>, MetaError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached("SELECT DISTINCT sha256 FROM artefacts")
            .map_err(sql("prepare referenced blobs"))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(sql("query referenced blobs"))?;
        let mut out = BTreeSet::new();
        for row in rows {
            let s = row.map_err(sql("read referenced blob"))?;
            out.insert(s.parse().map_err(|e| corrupt("artefacts", e))?);
        }
        Ok(out)
    }

    fn record_upload(&self, image: &str, blob: &Digest, now: u64) -> Result<(), MetaError> {
        self.lock()
            .execute(
                "INSERT OR REPLACE INTO uploads (image, sha256, uploaded_at) VALUES (?1, ?2, ?3)",
                params![image, blob.as_str(), now],
            )
            .map_err(sql("record upload"))?;
        Ok(())
    }

    fn has_upload(&self, image: &str, blob: &Digest) -> Result<bool, MetaError> {
        let found: Option<i64> = self
            .lock()
            .query_row(
                "SELECT 1 FROM uploads WHERE image = ?1 AND sha256 = ?2",
                [image, blob.as_str()],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql("check upload"))?;
        Ok(found.is_some())
    }

    fn create_project(&self, name: &str, owner: &str) -> Result<(), MetaError> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(sql("begin project"))?;
        tx.execute(
            "INSERT INTO projects (name, owner) VALUES (?1, ?2)",
            [name, owner],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                MetaError::Exists(format!("project {name}"))
            } else {
                MetaError::Sqlite {
                    step: "insert project",
                    source: e,
                }
            }
        })?;
        tx.execute(
            "INSERT INTO members (project, user) VALUES (?1, ?2)",
            [name, owner],
        )
        .map_err(sql("insert owner as member"))?;
        tx.commit().map_err(sql("commit project"))
    }

    fn project(&self, name: &str) -> Result<Option<Project>, MetaError> {
        let conn = self.lock();
        let owner: Option<String> = conn
            .query_row("SELECT owner FROM projects WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("select project"))?;
        let Some(owner) = owner else {
            return Ok(None);
        };
        let mut stmt = conn
            .prepare_cached("SELECT user FROM members WHERE project = ?1 ORDER BY user")
            .map_err(sql("prepare members"))?;
        let members = stmt
            .query_map([name], |r| r.get::<_, String>(0))
            .map_err(sql("query members"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("read member"))?;
        Ok(Some(Project {
            name: name.to_string(),
            owner,
            members,
        }))
    }

    fn projects(&self) -> Result<Vec<Project>, MetaError> {
        let names: Vec<String> = {
            let conn = self.lock();
            let mut stmt = conn
                .prepare_cached("SELECT name FROM projects ORDER BY name")
                .map_err(sql("prepare projects"))?;
            let rows = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sql("query projects"))?;
            rows.collect::<Result<_, _>>()
                .map_err(sql("read project"))?
        };
        // A project deleted between the two reads simply drops out.
        let mut out = Vec::new();
        for n in names {
            out.extend(self.project(&n)?);
        }
        Ok(out)
    }

    fn add_member(&self, project: &str, user: &str) -> Result<bool, MetaError> {
        let conn = self.lock();
        let exists: Option<i64> = conn
            .query_row("SELECT 1 FROM projects WHERE name = ?1", [project], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql("check project"))?;
        if exists.is_none() {
            return Ok(false);
        }
        conn.execute(
            "INSERT OR IGNORE INTO members (project, user) VALUES (?1, ?2)",
            [project, user],
        )
        .map_err(sql("insert member"))?;
        Ok(true)
    }

    fn create_token(&self, token: &TokenRecord) -> Result<(), MetaError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO tokens (hash, name, role, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![
                token.hash.as_str(),
                token.name,
                token.role.as_str(),
                token.created_at
            ],
        )
        .map_err(|e| {
            if is_unique_violation(&e) {
                MetaError::Exists("token".to_string())
            } else {
                MetaError::Sqlite {
                    step: "insert token",
                    source: e,
                }
            }
        })?;
        Ok(())
    }

    fn token(&self, hash: &Digest) -> Result<Option<TokenRecord>, MetaError> {
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT name, role, created_at FROM tokens WHERE hash = ?1",
                [hash.as_str()],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, u64>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(sql("select token"))?;
        row.map(|(name, role, created_at)| {
            Ok(TokenRecord {
                hash: hash.clone(),
                name,
                role: role.parse().map_err(|e| corrupt("tokens", e))?,
                created_at,
            })
        })
        .transpose()
    }

    fn tokens(&self) -> Result<Vec<TokenRecord>, MetaError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare_cached(
                "SELECT hash, name, role, created_at FROM tokens ORDER BY created_at, name",
            )
            .map_err(sql("prepare tokens"))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, u64>(3)?,
                ))
            })
            .map_err(sql("query tokens"))?;
        let mut out = Vec::new();
        for row in rows {
            let (hash, name, role, created_at) = row.map_err(sql("read token"))?;
            out.push(TokenRecord {
                hash: hash.parse().map_err(|e| corrupt("tokens", e))?,
                name,
                role: role.parse().map_err(|e| corrupt("tokens", e))?,
                created_at,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_conformance() {
        let s = SqliteMetaStore::open_in_memory().expect("open");
        crate::meta::conformance::exercise(&s);
    }

    #[test]
    fn migrations_run_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("carte.db");
        drop(SqliteMetaStore::open(&path).expect("first open"));
        let s = SqliteMetaStore::open(&path).expect("second open does not re-run migrations");
        let n: i64 = s
            .lock()
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, MIGRATIONS.len() as i64);
        let mode: String = s
            .lock()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("journal mode");
        assert_eq!(mode, "wal");
    }

    #[test]
    fn an_old_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("carte.db");
        {
            // A database as the first release left it: migration 1 only, with data.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(
                "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,
                 applied_at INTEGER NOT NULL DEFAULT 0)",
            )
            .expect("table");
            conn.execute_batch(MIGRATIONS[0]).expect("migration 1");
            conn.execute("INSERT INTO schema_migrations (version) VALUES (1)", [])
                .expect("record");
            conn.execute(
                "INSERT INTO images (name, kind, owner, created_at) VALUES ('old', 'user', 'a', 1)",
                [],
            )
            .expect("row");
        }
        let s = SqliteMetaStore::open(&path).expect("upgrade");
        assert_eq!(
            s.image("old").expect("read").map(|i| i.owner),
            Some("a".into())
        );
        assert!(s.delete_image("old").expect("delete uses the new table"));
        let n: i64 = s
            .lock()
            .query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .expect("version");
        assert_eq!(n, MIGRATIONS.len() as i64);
    }
}
