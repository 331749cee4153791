-- OneCard on PostgreSQL, schema 1: the same state as the SQLite store's onecard.db (see
-- gateway/store/sqlite.py for what each table means), plus the search index's rows, written in
-- the entries' own transaction. Applied by `onecard db upgrade`, in one transaction.

CREATE TABLE redeemed_tokens (
    token_id   bytea PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX redeemed_tokens_expiry ON redeemed_tokens (expires_at);

-- Entry idx's leaf and the hashes of the Merkle nodes it completes (level 0 first).
CREATE TABLE audit_entries (
    idx   bigint PRIMARY KEY,
    nodes bytea NOT NULL,
    leaf  bytea NOT NULL
);

CREATE TABLE audit_checkpoints (
    size       bigint PRIMARY KEY,
    note       bytea NOT NULL,
    created_at text NOT NULL
);

CREATE TABLE audit_keys (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    origin       text NOT NULL,
    verifier_key text NOT NULL UNIQUE,
    from_size    bigint NOT NULL,
    added_at     text NOT NULL
);

CREATE TABLE consents (
    consent_id       text PRIMARY KEY,
    subject          text NOT NULL,
    card_binding     text NOT NULL,
    grantee_org      text NOT NULL,
    grantee_type     text NOT NULL,
    grantee_district text NOT NULL,
    categories       text NOT NULL,
    purposes         text NOT NULL,
    valid_from       bigint NOT NULL,
    valid_until      bigint NOT NULL,
    max_uses         bigint NOT NULL,
    uses             bigint NOT NULL DEFAULT 0,
    granted_at       bigint NOT NULL,
    revoked_at       bigint
);
CREATE INDEX consents_subject ON consents (subject, granted_at);

CREATE TABLE emergency_justifications (
    request_id    text NOT NULL,
    org           text NOT NULL,
    reason        text NOT NULL,
    digest        text NOT NULL,
    justification text NOT NULL,
    recorded_at   bigint NOT NULL,
    -- a caller may reuse a request id (retries): a later access never replaces an earlier text
    PRIMARY KEY (request_id, digest)
);

CREATE TABLE audit_subject_heads (
    subject text PRIMARY KEY,
    idx     bigint NOT NULL
);

-- The search fields of each entry, extracted from its leaf by the server in the transaction
-- that stores the entry (derived data: a search never lags the log).
CREATE TABLE audit_search (
    idx      bigint PRIMARY KEY,
    time     text NOT NULL,
    org      text NOT NULL,
    rpc      text NOT NULL,
    decision text NOT NULL,
    basis    text NOT NULL,
    outcome  text NOT NULL,
    subject  text NOT NULL
);
CREATE INDEX audit_search_subject ON audit_search (subject, idx) WHERE subject <> '';
CREATE INDEX audit_search_org ON audit_search (org, idx);
CREATE INDEX audit_search_time ON audit_search (time);
