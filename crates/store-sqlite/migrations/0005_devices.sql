-- The per-user device registry. A device id is only meaningful within its user: the same id
-- sent for another user is another device, so one user's id can never reach another's record.
CREATE TABLE devices (
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    name          TEXT,
    device_type   TEXT NOT NULL,
    browser       TEXT,
    os            TEXT,
    user_agent    TEXT,
    last_ip       TEXT,
    first_seen_at INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    trusted       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id)
) STRICT, WITHOUT ROWID;

-- Devices of the sessions that exist already, so that none of them is announced as new.
INSERT INTO devices (user_id, device_id, name, device_type, browser, os, user_agent, last_ip,
                     first_seen_at, last_seen_at)
SELECT user_id, device_id, device_name, device_type, browser, os, user_agent, ip, created_at, last_active_at
FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY user_id, device_id ORDER BY last_active_at DESC) AS n
      FROM sessions)
WHERE n = 1;

-- Forgetting a device revokes its sessions.
CREATE INDEX sessions_by_device ON sessions (user_id, device_id);
