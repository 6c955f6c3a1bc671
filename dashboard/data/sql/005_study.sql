-- Migration 5: pilot reader studies (MRMC): accounts, sign-in sessions and attempts, studies, assignments,
-- reads (timed on the server), read events, questionnaires; annotations learn which study and arm they belong to.
-- Every time stamp written by the study code is UTC (naive TIMESTAMP holding UTC).

CREATE TABLE IF NOT EXISTS users (
    username       VARCHAR PRIMARY KEY,
    role           VARCHAR NOT NULL,              -- reader | coordinator
    password_hash  VARCHAR NOT NULL,              -- argon2id encoded hash (salt and parameters inside); never the password
    active         BOOLEAN NOT NULL DEFAULT true,
    created_by     VARCHAR NOT NULL DEFAULT '',
    created_at     TIMESTAMP NOT NULL
);

-- a signed-in session: only the SHA-256 of its token is kept, so a copy of the database signs no one in
CREATE TABLE IF NOT EXISTS auth_sessions (
    token_sha256  VARCHAR PRIMARY KEY,
    username      VARCHAR NOT NULL,
    client        VARCHAR NOT NULL DEFAULT '',
    created_at    TIMESTAMP NOT NULL,
    expires_at    TIMESTAMP NOT NULL,
    revoked_at    TIMESTAMP
);

CREATE SEQUENCE IF NOT EXISTS signin_seq;
CREATE TABLE IF NOT EXISTS signin_attempts (
    attempt_id    BIGINT PRIMARY KEY DEFAULT nextval('signin_seq'),
    username      VARCHAR NOT NULL,               -- as typed (lower-cased), known or not
    client        VARCHAR NOT NULL DEFAULT '',
    attempted_at  TIMESTAMP NOT NULL,
    success       BOOLEAN NOT NULL
);

CREATE TABLE IF NOT EXISTS studies (
    name               VARCHAR PRIMARY KEY,
    title              VARCHAR NOT NULL DEFAULT '',
    definition_toml    VARCHAR NOT NULL,          -- the definition as given (file text, or written from code)
    definition_sha256  VARCHAR NOT NULL,
    seed               BIGINT NOT NULL,           -- randomisation seed (recorded)
    pinned             JSON NOT NULL,             -- what creation resolved: case ids, probe version per arm, model card, weights
    status             VARCHAR NOT NULL DEFAULT 'open',  -- open | closed
    revision           INTEGER NOT NULL DEFAULT 1,        -- optimistic concurrency: an edit names the revision it read
    created_by         VARCHAR NOT NULL,
    created_at         TIMESTAMP NOT NULL,
    updated_at         TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS study_assignments (
    assignment_id  VARCHAR PRIMARY KEY,           -- <study>/<reader>/<session>/<position>
    study          VARCHAR NOT NULL,
    reader         VARCHAR NOT NULL,
    arm            VARCHAR NOT NULL,
    session_index  INTEGER NOT NULL,              -- 0-based; one session per arm
    position       INTEGER NOT NULL,              -- 0-based order inside the session
    case_id        VARCHAR NOT NULL,
    UNIQUE (study, reader, arm, case_id),
    UNIQUE (study, reader, session_index, position)
);

-- one row per reading; a submitted row is never updated: a correction is a new row whose `supersedes`
-- names the row it replaces (both kept)
CREATE TABLE IF NOT EXISTS study_reads (
    read_id            VARCHAR PRIMARY KEY,
    assignment_id      VARCHAR NOT NULL,
    study              VARCHAR NOT NULL,
    reader             VARCHAR NOT NULL,
    opened_at          TIMESTAMP NOT NULL,        -- server time of the first render
    first_drawing_at   TIMESTAMP,
    submitted_at       TIMESTAMP,
    birads             INTEGER,                   -- 0..6
    malignancy         DOUBLE,                    -- probability of malignancy, 0..100 (%)
    click_image_id     VARCHAR,                   -- most suspicious location (optional): image and model-space pixel
    click_x            DOUBLE,
    click_y            DOUBLE,
    confidence         INTEGER,                   -- 1..5
    helpfulness        INTEGER,                   -- 1..5, only in arms that show an explanation
    comment            VARCHAR NOT NULL DEFAULT '',
    supersedes         VARCHAR,                   -- read_id this correction replaces
    correction_reason  VARCHAR NOT NULL DEFAULT '',
    corrected_by       VARCHAR NOT NULL DEFAULT ''
);

CREATE SEQUENCE IF NOT EXISTS read_event_seq;
CREATE TABLE IF NOT EXISTS study_read_events (
    event_id     BIGINT PRIMARY KEY DEFAULT nextval('read_event_seq'),
    read_id      VARCHAR NOT NULL,
    study        VARCHAR NOT NULL,
    reader       VARCHAR NOT NULL,
    kind         VARCHAR NOT NULL,                -- window_level | overlay_toggle | zoom | pan | image_switch
    payload      JSON,
    recorded_at  TIMESTAMP NOT NULL               -- server time
);

CREATE TABLE IF NOT EXISTS study_questionnaires (
    study          VARCHAR NOT NULL,
    reader         VARCHAR NOT NULL,
    session_index  INTEGER NOT NULL,
    arm            VARCHAR NOT NULL,
    sus_items      JSON,                          -- 10 answers 1..5 in the standard item order, or NULL
    sus_score      DOUBLE,                        -- 0..100, standard SUS scoring
    trust_items    JSON,                          -- {item text: 1..5}
    comment        VARCHAR NOT NULL DEFAULT '',
    submitted_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (study, reader, session_index)
);

ALTER TABLE annotations ADD COLUMN IF NOT EXISTS study VARCHAR;
ALTER TABLE annotations ADD COLUMN IF NOT EXISTS arm VARCHAR;
