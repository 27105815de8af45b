//! Keel's tables in PostgreSQL (format version 1), created on first use in a
//! schema of Keel's own, and the server-side functions that apply a change
//! set: the core's rules for a commit (validate every recorded version, then
//! apply: `engine/apply.rs`), run inside PostgreSQL so that a commit is one
//! round trip and the versions are checked under the rows' locks.
//!
//! Every name, package id and principal is `bytea` (the UTF-8 bytes: they
//! may hold NUL, which `text` refuses, and bytes sort as on redb); times are
//! Unix seconds and versions are commit sequence numbers from the sequence
//! `tid`, both `bigint`.

/// The format version this build writes and reads.
pub(crate) const FORMAT_VERSION: i64 = 1;

/// Whether `schema` is a plain lower-case SQL identifier (it is spliced into
/// statements, so nothing else is accepted).
pub(crate) fn valid_schema_name(schema: &str) -> bool {
    let mut chars = schema.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && schema.len() <= 63
}

/// The statements that create the tables, indexes, sequence and functions
/// (each idempotent), with `{s}` standing for the schema.
const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS {s}.meta (
    name text PRIMARY KEY,
    value bigint NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS {s}.tid;
CREATE TABLE IF NOT EXISTS {s}.sessions (
    key bytea PRIMARY KEY,
    version bigint NOT NULL,
    created bigint NOT NULL,
    last_access bigint NOT NULL,
    principal bytea,
    packages_version bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS sessions_last_access ON {s}.sessions (last_access);
CREATE INDEX IF NOT EXISTS sessions_created ON {s}.sessions (created);
CREATE INDEX IF NOT EXISTS sessions_principal ON {s}.sessions (principal)
    WHERE principal IS NOT NULL;
CREATE TABLE IF NOT EXISTS {s}.names (
    key bytea NOT NULL,
    package bytea NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (key, package)
);
CREATE TABLE IF NOT EXISTS {s}.items (
    key bytea NOT NULL,
    package bytea NOT NULL,
    name bytea NOT NULL,
    version bigint NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (key, package, name)
);
CREATE TABLE IF NOT EXISTS {s}.settings (
    name text PRIMARY KEY,
    value bytea NOT NULL
);

-- One group commit: change sets 1..n, each validated and applied on its
-- own (a conflict fails its change set alone). Change set k owns entries
-- c_end[k-1]+1 .. c_end[k] of the check arrays, and likewise for sessions
-- and items. Returns per change set the tid it was applied as (null if it
-- only validated or failed) and the 0-based index of its first check that
-- failed (-1: a session it created was created concurrently).
CREATE OR REPLACE FUNCTION {s}.commit_batch(
    lock_keys bytea[],
    c_end int[], c_kind int2[], c_key bytea[], c_pkg bytea[], c_name bytea[], c_version int8[],
    s_end int[], s_key bytea[], s_expect int8[], s_wipe bool[], s_op int2[],
    s_created int8[], s_last int8[], s_principal bytea[], s_touch int8[],
    i_end int[], i_key bytea[], i_pkg bytea[], i_name bytea[], i_value bytea[])
RETURNS TABLE (applied_tid int8, failed_check int4)
LANGUAGE plpgsql AS $fn$
DECLARE
    n int := coalesce(array_length(c_end, 1), 0);
    k int;
    j int;
    c0 int := 0;
    s0 int := 0;
    i0 int := 0;
    cur int8;
    t int8;
    changed bool;
    failed int4;
BEGIN
    -- Every session any change set reads or writes, locked in key order
    -- before anything else: all writers of a session lock its row first,
    -- so what is validated below cannot change before this commit ends, and
    -- two commits never wait for each other in opposite orders.
    PERFORM 1 FROM {s}.sessions WHERE key = ANY(lock_keys) ORDER BY key FOR UPDATE;
    FOR k IN 1..n LOOP
        applied_tid := NULL;
        failed := NULL;
        FOR j IN c0 + 1 .. c_end[k] LOOP
            IF c_kind[j] = 0 THEN
                SELECT s.version INTO cur FROM {s}.sessions s WHERE s.key = c_key[j];
            ELSIF c_kind[j] = 1 THEN
                SELECT s.packages_version INTO cur FROM {s}.sessions s WHERE s.key = c_key[j];
            ELSIF c_kind[j] = 2 THEN
                SELECT m.version INTO cur FROM {s}.names m
                    WHERE m.key = c_key[j] AND m.package = c_pkg[j];
            ELSE
                SELECT i.version INTO cur FROM {s}.items i
                    WHERE i.key = c_key[j] AND i.package = c_pkg[j] AND i.name = c_name[j];
            END IF;
            IF coalesce(cur, 0) <> c_version[j] THEN
                failed := j - c0 - 1;
                EXIT;
            END IF;
        END LOOP;
        IF failed IS NULL AND (s_end[k] > s0 OR i_end[k] > i0) THEN
            BEGIN
                t := nextval('{s}.tid');
                -- Wipes and record changes first.
                FOR j IN s0 + 1 .. s_end[k] LOOP
                    IF s_wipe[j] THEN
                        DELETE FROM {s}.items i WHERE i.key = s_key[j];
                        DELETE FROM {s}.names m WHERE m.key = s_key[j];
                        UPDATE {s}.sessions s SET packages_version = 0 WHERE s.key = s_key[j];
                    END IF;
                    IF s_op[j] = 1 AND s_expect[j] = 0 THEN
                        -- Validated absent: a row created meanwhile by a
                        -- commit still in flight is a unique violation.
                        INSERT INTO {s}.sessions
                            (key, version, created, last_access, principal, packages_version)
                            VALUES (s_key[j], t, s_created[j], s_last[j], s_principal[j], 0);
                    ELSIF s_op[j] = 1 THEN
                        -- Last-access times only grow, within one generation.
                        UPDATE {s}.sessions s SET version = t, created = s_created[j],
                            last_access = CASE WHEN s_wipe[j] THEN s_last[j]
                                ELSE greatest(s_last[j], s.last_access) END,
                            principal = s_principal[j]
                            WHERE s.key = s_key[j];
                    ELSIF s_op[j] = 2 THEN
                        DELETE FROM {s}.sessions s WHERE s.key = s_key[j];
                    END IF;
                END LOOP;
                -- Values; a name that appears or disappears bumps its
                -- package's name set and the session's package set.
                FOR j IN i0 + 1 .. i_end[k] LOOP
                    IF i_value[j] IS NULL THEN
                        DELETE FROM {s}.items i
                            WHERE i.key = i_key[j] AND i.package = i_pkg[j] AND i.name = i_name[j];
                        changed := FOUND;
                    ELSE
                        UPDATE {s}.items i SET version = t, value = i_value[j]
                            WHERE i.key = i_key[j] AND i.package = i_pkg[j] AND i.name = i_name[j];
                        changed := NOT FOUND;
                        IF changed THEN
                            INSERT INTO {s}.items (key, package, name, version, value)
                                VALUES (i_key[j], i_pkg[j], i_name[j], t, i_value[j]);
                        END IF;
                    END IF;
                    IF changed THEN
                        INSERT INTO {s}.names AS m (key, package, version)
                            VALUES (i_key[j], i_pkg[j], t)
                            ON CONFLICT (key, package) DO UPDATE SET version = excluded.version;
                        UPDATE {s}.sessions s SET packages_version = t WHERE s.key = i_key[j];
                    END IF;
                END LOOP;
                -- Touches merge by maximum and never bump a version; a
                -- session that no longer exists is not touched.
                FOR j IN s0 + 1 .. s_end[k] LOOP
                    IF s_touch[j] IS NOT NULL THEN
                        UPDATE {s}.sessions s SET last_access = s_touch[j]
                            WHERE s.key = s_key[j] AND s.last_access < s_touch[j];
                    END IF;
                END LOOP;
                applied_tid := t;
            EXCEPTION WHEN unique_violation THEN
                failed := -1;
            END;
        END IF;
        failed_check := failed;
        RETURN NEXT;
        c0 := c_end[k];
        s0 := s_end[k];
        i0 := i_end[k];
    END LOOP;
END;
$fn$;

-- Delete sessions and all their data; returns how many existed. The rows
-- are locked first, so a commit in flight on one of them finishes before
-- its data is deleted (and none is left behind).
CREATE OR REPLACE FUNCTION {s}.delete_sessions(keys bytea[])
RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    locked bytea[];
BEGIN
    SELECT coalesce(array_agg(d.key), '{}') INTO locked FROM
        (SELECT s.key FROM {s}.sessions s WHERE s.key = ANY(keys) ORDER BY s.key FOR UPDATE) d;
    DELETE FROM {s}.items i WHERE i.key = ANY(locked);
    DELETE FROM {s}.names m WHERE m.key = ANY(locked);
    DELETE FROM {s}.sessions s WHERE s.key = ANY(locked);
    RETURN coalesce(array_length(locked, 1), 0);
END;
$fn$;

-- Delete up to n expired sessions: last access before idle_cutoff, or
-- created before age_cutoff (null: no such rule). Rows another server is
-- sweeping or a request is committing are skipped, never waited for; a row
-- changed since the statement began is checked again on its newest version.
CREATE OR REPLACE FUNCTION {s}.sweep(idle_cutoff int8, age_cutoff int8, n int)
RETURNS TABLE (removed bigint, more bool)
LANGUAGE plpgsql AS $fn$
DECLARE
    doomed bytea[];
BEGIN
    SELECT coalesce(array_agg(d.key), '{}') INTO doomed FROM
        (SELECT s.key FROM {s}.sessions s
            WHERE s.last_access < idle_cutoff OR s.created < age_cutoff
            LIMIT n FOR UPDATE SKIP LOCKED) d;
    DELETE FROM {s}.items i WHERE i.key = ANY(doomed);
    DELETE FROM {s}.names m WHERE m.key = ANY(doomed);
    DELETE FROM {s}.sessions s WHERE s.key = ANY(doomed);
    removed := coalesce(array_length(doomed, 1), 0);
    more := EXISTS (SELECT 1 FROM {s}.sessions s
        WHERE (s.last_access < idle_cutoff OR s.created < age_cutoff)
        AND NOT s.key = ANY(doomed));
    RETURN NEXT;
END;
$fn$;
"#;

/// The DDL for `schema`.
pub(crate) fn ddl(schema: &str) -> String {
    DDL.replace("{s}", &quoted(schema))
}

/// `schema` as a quoted identifier (already checked by
/// [`valid_schema_name`]).
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

/// The statements the container runs, for `schema`.
#[derive(Debug)]
pub(crate) struct Statements {
    /// `$1 bytea`: one consistent read of a whole session.
    pub(crate) load: String,
    /// The 21 arrays of [`commit_batch`](DDL).
    pub(crate) commit: String,
    pub(crate) delete: String,
    pub(crate) sweep: String,
    pub(crate) list: String,
    pub(crate) values_of: String,
    pub(crate) by_principal: String,
    pub(crate) stats_sessions: String,
    pub(crate) stats_bytes: String,
    pub(crate) load_setting: String,
    pub(crate) store_setting: String,
    /// Insert unless present, then read: one statement, so two servers
    /// starting at once get the same value.
    pub(crate) initialize_setting: String,
}

impl Statements {
    pub(crate) fn new(schema: &str) -> Self {
        let s = quoted(schema);
        Statements {
            // One statement, so one snapshot: a session's record, name-set
            // versions and values are read consistently, in one round trip.
            // NOTE: `key = $1`, not `= ANY($1)`: with an array PostgreSQL
            // cannot estimate the rows, prefers a custom plan, and plans the
            // statement again at every execution (measured: 81 against 30
            // PostgreSQL µs per read).
            load: format!(
                "SELECT key, 0::int2, NULL::bytea, NULL::bytea, version, created, last_access, \
                        principal, packages_version, NULL::bytea \
                   FROM {s}.sessions WHERE key = $1 \
                 UNION ALL \
                 SELECT key, 1::int2, package, NULL, version, NULL, NULL, NULL, NULL, NULL \
                   FROM {s}.names WHERE key = $1 \
                 UNION ALL \
                 SELECT key, 2::int2, package, name, version, NULL, NULL, NULL, NULL, value \
                   FROM {s}.items WHERE key = $1"
            ),
            commit: format!(
                "SELECT applied_tid, failed_check FROM {s}.commit_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
            ),
            delete: format!("SELECT {s}.delete_sessions($1)"),
            sweep: format!("SELECT removed, more FROM {s}.sweep($1, $2, $3)"),
            list: format!(
                "SELECT s.key, s.created, s.last_access, s.principal, \
                        coalesce((SELECT sum(octet_length(i.value)) FROM {s}.items i \
                                  WHERE i.key = s.key), 0)::int8 \
                   FROM {s}.sessions s WHERE s.key > $1 ORDER BY s.key LIMIT $2"
            ),
            values_of: format!(
                "SELECT package, name, value FROM {s}.items WHERE key = $1 ORDER BY package, name"
            ),
            by_principal: format!("SELECT key FROM {s}.sessions WHERE principal = $1 ORDER BY key"),
            stats_sessions: format!("SELECT created, last_access FROM {s}.sessions"),
            stats_bytes: format!(
                "SELECT coalesce(sum(octet_length(value)), 0)::int8 FROM {s}.items"
            ),
            load_setting: format!("SELECT value FROM {s}.settings WHERE name = $1"),
            store_setting: format!(
                "INSERT INTO {s}.settings (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value"
            ),
            initialize_setting: format!(
                "WITH added AS (INSERT INTO {s}.settings (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO NOTHING RETURNING value) \
                 SELECT value FROM added \
                 UNION ALL SELECT value FROM {s}.settings WHERE name = $1"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_identifiers_are_schema_names() {
        for good in ["keel", "_k", "keel_test_01"] {
            assert!(valid_schema_name(good), "{good}");
        }
        for bad in [
            "",
            "Keel",
            "1keel",
            "ke-el",
            "keel\"; drop",
            &"k".repeat(64),
        ] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
    }
}
