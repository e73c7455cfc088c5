"""Table definitions. Content layers beyond ``raw`` live in ``content``."""

SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id           INTEGER PRIMARY KEY,
    channel      TEXT    NOT NULL,
    received_at  REAL    NOT NULL,
    raw          BLOB    NOT NULL,
    status       TEXT    NOT NULL,
    control_id   TEXT,
    message_type TEXT,
    msg_key      TEXT,
    duplicate    INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    updated_at   REAL
);
CREATE INDEX IF NOT EXISTS messages_pending ON messages (channel, id)
    WHERE status = 'RECEIVED';
CREATE INDEX IF NOT EXISTS messages_control ON messages (channel, control_id);
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
