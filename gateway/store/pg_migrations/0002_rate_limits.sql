-- OneCard on PostgreSQL, schema 2: token buckets shared by every gateway process
-- (gateway/store/pg_rate_limits.py). One row per bucket (an organisation's id): the tokens left
-- as of updated_at, the server's clock. Each gateway takes up to a few tokens per round trip
-- in one INSERT ... ON CONFLICT DO UPDATE ... RETURNING that refills and takes in SQL.
--
-- UNLOGGED: no WAL and no fsync per call. A crash of the database server empties the table,
-- which refills every bucket to its burst once: acceptable for a rate limit (it bounds load,
-- it is not a record of anything). `granted` is the last grant, returned to its taker.

CREATE UNLOGGED TABLE rate_buckets (
    bucket     text PRIMARY KEY,
    tokens     double precision NOT NULL,
    granted    integer NOT NULL,
    updated_at timestamptz NOT NULL
);
