"""Table definitions. Content layers beyond ``raw`` live in ``content``."""

import sqlite3

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id           INTEGER PRIMARY KEY,
    channel      TEXT    NOT NULL,
    received_at  REAL    NOT NULL,
    status       TEXT    NOT NULL,
    control_id   TEXT,
    message_type TEXT,
    msg_key      TEXT,
    duplicate    INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    updated_at   REAL
);
-- The raw bytes live beside the status row, not in it: the pipeline rewrites every status row
-- once, and a row that carried its message would be rewritten, and logged to the WAL, whole.
CREATE TABLE IF NOT EXISTS message_raw (
    id  INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    raw BLOB    NOT NULL
);
-- Ingest writes a message and its raw bytes with one statement: when a group commit holds only
-- new messages, that statement is the whole transaction (see engine/store/sqlite.py).
CREATE VIEW IF NOT EXISTS message_in AS
    SELECT m.id, m.channel, m.received_at, m.status, m.control_id, m.message_type, m.msg_key,
           m.duplicate, m.error, m.updated_at, r.raw
    FROM messages m JOIN message_raw r ON r.id = m.id;
CREATE TRIGGER IF NOT EXISTS message_in_insert INSTEAD OF INSERT ON message_in BEGIN
    INSERT INTO messages (id, channel, received_at, status, control_id, message_type, msg_key,
                          duplicate, error, updated_at)
    VALUES (NEW.id, NEW.channel, NEW.received_at, NEW.status, NEW.control_id, NEW.message_type,
            NEW.msg_key, NEW.duplicate, NEW.error, NEW.updated_at);
    INSERT INTO message_raw (id, raw) VALUES (last_insert_rowid(), NEW.raw);
END;
CREATE INDEX IF NOT EXISTS messages_pending ON messages (channel, id)
    WHERE status = 'RECEIVED';
-- Control ids arrive in no order, so each new entry lands on its own index page. Messages are
-- indexed when the pipeline moves them on from RECEIVED, a batch at a time (pages shared),
-- not one by one on the ACK path; the few still RECEIVED are found through messages_pending.
CREATE INDEX IF NOT EXISTS messages_control_id ON messages (control_id)
    WHERE status <> 'RECEIVED';
CREATE INDEX IF NOT EXISTS messages_received ON messages (received_at);

CREATE TABLE IF NOT EXISTS content (
    message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    layer      TEXT    NOT NULL,
    data       BLOB    NOT NULL,
    created_at REAL    NOT NULL,
    PRIMARY KEY (message_id, layer)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS deliveries (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    destination TEXT    NOT NULL,
    status      TEXT    NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    payload     BLOB,               -- NULL: the message's raw bytes
    response    BLOB,
    error       TEXT,
    updated_at  REAL
);
CREATE INDEX IF NOT EXISTS deliveries_queued ON deliveries (destination, id)
    WHERE status = 'QUEUED';
CREATE INDEX IF NOT EXISTS deliveries_message ON deliveries (message_id);
"""


def migrate_sqlite(conn: sqlite3.Connection) -> None:
    """Bring a database created by an earlier layout up to date (before ``SQLITE_SCHEMA`` runs).

    Earlier layouts kept the raw bytes in ``messages`` and indexed every control id on insert.
    """
    cols = [row[1] for row in conn.execute("PRAGMA table_info(messages)")]
    if "raw" not in cols:
        return
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE IF NOT EXISTS message_raw (id INTEGER PRIMARY KEY"
                 " REFERENCES messages (id) ON DELETE CASCADE, raw BLOB NOT NULL)")
    conn.execute("INSERT OR IGNORE INTO message_raw (id, raw) SELECT id, raw FROM messages")
    conn.execute("DROP INDEX IF EXISTS messages_control")
    conn.execute("ALTER TABLE messages DROP COLUMN raw")
    conn.execute("COMMIT")
