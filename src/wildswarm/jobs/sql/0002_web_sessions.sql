-- The web app's logins: server-side sessions (so logging out, or a new password, ends them) and
-- failed-login counters (so guessing passwords is throttled), shared by every web worker.

CREATE TABLE web_sessions (
    -- SHA-256 of the random session id the browser holds: a copy of this table logs nobody in
    id_hash     text PRIMARY KEY,
    user_name   text NOT NULL,
    -- HMAC of the password it was opened with: a changed password ends every earlier session
    credential  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX web_sessions_expires_idx ON web_sessions (expires_at);

CREATE TABLE login_failures (
    key           text PRIMARY KEY,        -- 'ip:<address>' or 'user:<name>'
    failures      integer NOT NULL,
    window_start  timestamptz NOT NULL,
    locked_until  timestamptz
);
