-- schema.sql of commit 3fcee18, the last release with the hash chain (git show 3fcee18:schema.sql), kept
-- unchanged below this comment so that tests/integration/test_upgrade.py can build a database of that release.
-- Consumer Credit Ledger: the one truth for the database. Applied by `ledger db init`; safe to run twice.
-- No column holds a raw identifier: consumers appear only as keyed HMAC tokens (ledger/identity.py).

CREATE TABLE IF NOT EXISTS platforms (
    id              bigserial PRIMARY KEY,
    slug            text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9_-]{1,62}$'),
    name            text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    operator_trust  double precision NOT NULL DEFAULT 1.0 CHECK (operator_trust BETWEEN 0.2 AND 1.0),
    -- operator_trust x (1 - overturn rate), floored; what the scoring model uses.
    effective_trust double precision NOT NULL DEFAULT 1.0 CHECK (effective_trust BETWEEN 0.2 AND 1.0),
    rate_per_second integer CHECK (rate_per_second > 0),
    rate_burst      integer CHECK (rate_burst > 0),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- API keys are shown once; only their SHA-256 digest is kept, found by the visible key id.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      text PRIMARY KEY,
    platform_id bigint NOT NULL REFERENCES platforms (id),
    digest      bytea NOT NULL,
    scopes      text[] NOT NULL CHECK (scopes <@ ARRAY['report', 'lookup', 'dispute', 'admin']::text[]),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_platform ON api_keys (platform_id);

-- Subjects: one consumer, many identifiers. Strong identifiers point straight at their subject's
-- root; a merge re-points the smaller subject's tokens (union by size, flat find).
CREATE TABLE IF NOT EXISTS subjects (
    id         bigserial PRIMARY KEY,
    merged_into bigint REFERENCES subjects (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS identity_links (
    token      text PRIMARY KEY CHECK (token ~ '^[0-9a-f]{64}$'),
    id_type    text NOT NULL,
    subject_id bigint NOT NULL REFERENCES subjects (id)
);
CREATE INDEX IF NOT EXISTS identity_links_subject ON identity_links (subject_id);

-- The current state of each incident: a projection of ledger_events, which is the history.
CREATE TABLE IF NOT EXISTS incidents (
    id             uuid PRIMARY KEY,
    platform_id    bigint NOT NULL REFERENCES platforms (id),
    external_id    text NOT NULL CHECK (length(external_id) BETWEEN 1 AND 128),
    request_digest text NOT NULL,
    category       text NOT NULL,
    confirmation   text NOT NULL,
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    currency       char(3) NOT NULL,
    occurred_at    timestamptz NOT NULL,
    reported_at    timestamptz NOT NULL DEFAULT now(),
    status         text NOT NULL DEFAULT 'active'
                   CHECK (status IN ('active', 'disputed', 'retracted', 'expired')),
    status_reason  text,
    status_at      timestamptz NOT NULL DEFAULT now(),
    subject_id     bigint REFERENCES subjects (id),
    -- Salt of the identifiers commitment in the chain; deleted on expiry (crypto-shredding).
    salt           bytea,
    UNIQUE (platform_id, external_id)
);
CREATE INDEX IF NOT EXISTS incidents_subject ON incidents (subject_id);
CREATE INDEX IF NOT EXISTS incidents_unlinked ON incidents (reported_at) WHERE subject_id IS NULL;
CREATE INDEX IF NOT EXISTS incidents_expiry ON incidents (occurred_at) WHERE status <> 'expired';

CREATE TABLE IF NOT EXISTS incident_identifiers (
    incident_id uuid NOT NULL REFERENCES incidents (id),
    id_type     text NOT NULL,
    token       text NOT NULL CHECK (token ~ '^[0-9a-f]{64}$'),
    PRIMARY KEY (incident_id, token)
);
CREATE INDEX IF NOT EXISTS incident_identifiers_token ON incident_identifiers (token);

CREATE TABLE IF NOT EXISTS incident_evidence (
    incident_id uuid NOT NULL REFERENCES incidents (id),
    pdq         bytea NOT NULL CHECK (length(pdq) = 32),
    quality     integer NOT NULL DEFAULT 100,
    PRIMARY KEY (incident_id, pdq)
);

-- The append-only, hash-chained history. ledger_head serialises writers so the chain never forks.
CREATE TABLE IF NOT EXISTS ledger_events (
    seq         bigint PRIMARY KEY,
    kind        text NOT NULL,
    incident_id uuid,
    at          timestamptz NOT NULL,
    payload     jsonb NOT NULL,
    prev_hash   text NOT NULL,
    entry_hash  text NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS ledger_events_incident ON ledger_events (incident_id);

CREATE TABLE IF NOT EXISTS ledger_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint NOT NULL,
    head_hash text NOT NULL,
    at        timestamptz NOT NULL
);
INSERT INTO ledger_head (singleton, seq, head_hash, at)
VALUES (true, 0, repeat('0', 64), now()) ON CONFLICT DO NOTHING;
-- Every append updates the one head row and leaves a dead version of it: vacuum it after every 1,000
-- appends rather than after 20% of one row's worth, so that it stays a few pages (see ledger_append).
ALTER TABLE ledger_head SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000);

CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS ledger_events_append_only ON ledger_events;
CREATE TRIGGER ledger_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Append events to the chain in one statement, so the ledger_head lock is held only while PostgreSQL
-- works and never across a client round trip. The hash is the one defined in ledger/domain/chain.py:
-- SHA-256 of the canonical JSON {"at","kind","payload","prev","seq"}. The caller passes each payload
-- already in canonical form (sorted keys, no whitespace, ASCII escapes) and this splices the other four
-- fields around it in sorted-key order; it is stored as jsonb, so verification re-encodes what is read.
-- Plain PL/pgSQL expressions rather than SQL statements where possible: each statement costs more than
-- the hashing, and all of this runs under the lock. The head row is reached through its primary key, never
-- by a scan (enable_seqscan off for this function only): every append leaves a dead version of it, and
-- under concurrent appends pruning rarely gets the page to itself, so until VACUUM the table grows by
-- hundreds of pages. A scan read them all while holding the lock, and appends slowed as the ledger grew
-- (pgbench on ledger_report, 16 clients, a head of 52 pages: 866 reports/s by scan, 1,163 by key).
CREATE OR REPLACE FUNCTION ledger_append(kinds text[], incident_ids uuid[], payloads text[])
RETURNS TABLE (seq bigint, entry_hash text, at timestamptz) LANGUAGE plpgsql SET enable_seqscan = off AS $$
DECLARE
    n          integer := coalesce(cardinality(kinds), 0);
    first_seq  bigint;
    prev       text;
    stamp      timestamptz;
    stamp_text text;
    prevs      text[] := '{}';
    hashes     text[] := '{}';
BEGIN
    IF coalesce(cardinality(incident_ids), 0) <> n OR coalesce(cardinality(payloads), 0) <> n THEN
        RAISE EXCEPTION 'ledger_append: kinds, incident_ids and payloads differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    SELECT h.seq + 1, h.head_hash INTO first_seq, prev FROM ledger_head AS h WHERE h.singleton FOR UPDATE;
    -- Read the clock once the lock is held, not now() (the transaction's start): the events are stamped
    -- with the moment they joined the chain, so `at` never goes backwards along it.
    stamp := clock_timestamp();
    stamp_text := to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    FOR i IN 1 .. n LOOP
        -- A kind is spliced in unescaped, so it must be a string JSON would not escape.
        IF kinds[i] IS NULL OR kinds[i] !~ '^[A-Za-z0-9_]+$' THEN
            RAISE EXCEPTION 'ledger_append: event kind % must match [A-Za-z0-9_]+', quote_literal(kinds[i])
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        prevs[i] := prev;
        prev := encode(sha256(convert_to(concat(
            '{"at":"', stamp_text, '","kind":"', kinds[i], '","payload":', payloads[i],
            ',"prev":"', prev, '","seq":', first_seq + i - 1, '}'), 'UTF8')), 'hex');
        hashes[i] := prev;
    END LOOP;
    INSERT INTO ledger_events (seq, kind, incident_id, at, payload, prev_hash, entry_hash)
    SELECT first_seq + e.ord - 1, e.kind, e.incident_id, stamp, e.payload::jsonb, e.prev_hash, e.entry_hash
    FROM unnest(kinds, incident_ids, payloads, prevs, hashes)
         WITH ORDINALITY AS e (kind, incident_id, payload, prev_hash, entry_hash, ord);
    UPDATE ledger_head SET seq = first_seq + n - 1, head_hash = prev, at = stamp WHERE singleton;
    at := stamp;
    FOR i IN 1 .. n LOOP
        seq := first_seq + i - 1;
        entry_hash := hashes[i];
        RETURN NEXT;
    END LOOP;
END $$;

-- Report incidents in one statement, so that a report is one round trip and one transaction (called on
-- an autocommit connection by ledger/storage/incidents.py). Items are parallel arrays, one element per
-- incident; a token or evidence hash names its incident by its 1-based position. Incidents whose
-- (platform, external_id) already exists are skipped (a concurrent identical insert waits on the unique
-- index, then skips). Each inserted incident gets its tokens, its evidence, one outbox row for all of them
-- and a chained `reported` event, appended last so that the ledger head is locked only until the commit
-- that ends the statement. Returns one row per item: the new incident (created) or the existing one.
CREATE OR REPLACE FUNCTION ledger_report(
    platform bigint, ids uuid[], external_ids text[], digests text[], categories text[],
    confirmations text[], amounts bigint[], currencies text[], occurred timestamptz[], salts bytea[],
    payloads text[], token_items integer[], token_types text[], tokens text[],
    evidence_items integer[], evidence_pdqs bytea[], outbox_task text)
RETURNS TABLE (r_external_id text, r_id uuid, r_created boolean, r_digest text, r_status text,
               r_seq bigint, r_entry_hash text) LANGUAGE plpgsql AS $$
DECLARE
    chosen integer[];  -- positions of the inserted items, in input order
    is_new boolean[] := array_fill(false, ARRAY[coalesce(cardinality(ids), 0)]);
    pos    integer;
BEGIN
    -- Joins and position lookups, never `= ANY(array)` over the batch: that is quadratic for 1,000 items.
    WITH ins AS (
        INSERT INTO incidents (id, platform_id, external_id, request_digest, category, confirmation,
                               amount_minor, currency, occurred_at, salt)
        SELECT u.id, platform, u.external_id, u.digest, u.category, u.confirmation, u.amount, u.currency,
               u.occurred, u.salt
        FROM unnest(ids, external_ids, digests, categories, confirmations, amounts, currencies, occurred, salts)
             AS u (id, external_id, digest, category, confirmation, amount, currency, occurred, salt)
        -- In key order, so that concurrent batches sharing external ids wait on each other in the same
        -- order and never deadlock; the events still follow the input order (`chosen`).
        ORDER BY u.external_id
        ON CONFLICT (platform_id, external_id) DO NOTHING
        RETURNING incidents.id)
    SELECT array_agg(u.ord ORDER BY u.ord) INTO chosen
    FROM unnest(ids) WITH ORDINALITY AS u (id, ord) JOIN ins ON ins.id = u.id;
    IF chosen IS NOT NULL THEN
        FOREACH pos IN ARRAY chosen LOOP
            is_new[pos] := true;
        END LOOP;
        INSERT INTO incident_identifiers (incident_id, id_type, token)
        SELECT ids[t.item], t.id_type, t.token
        FROM unnest(token_items, token_types, tokens) AS t (item, id_type, token)
        WHERE is_new[t.item]
        ON CONFLICT DO NOTHING;
        IF cardinality(evidence_items) > 0 THEN
            INSERT INTO incident_evidence (incident_id, pdq, quality)
            SELECT ids[e.item], e.pdq, 100 FROM unnest(evidence_items, evidence_pdqs) AS e (item, pdq)
            WHERE is_new[e.item]
            ON CONFLICT DO NOTHING;
        END IF;
        INSERT INTO outbox (task, args)
        SELECT outbox_task, jsonb_build_object('incidents', jsonb_agg(ids[c.i]::text ORDER BY c.ord))
        FROM unnest(chosen) WITH ORDINALITY AS c (i, ord);
        RETURN QUERY
            SELECT external_ids[chosen[a.ord]], ids[chosen[a.ord]], true, digests[chosen[a.ord]],
                   'active'::text, a.seq, a.entry_hash
            FROM ledger_append(array_fill('reported'::text, ARRAY[cardinality(chosen)]),
                               (SELECT array_agg(ids[c] ORDER BY o) FROM unnest(chosen) WITH ORDINALITY AS x (c, o)),
                               (SELECT array_agg(payloads[c] ORDER BY o) FROM unnest(chosen) WITH ORDINALITY AS x (c, o)))
                 WITH ORDINALITY AS a (seq, entry_hash, at, ord);
    END IF;
    -- The rest already existed. Skipped when every item was new, the common case.
    IF coalesce(cardinality(chosen), 0) < cardinality(ids) THEN
        RETURN QUERY
            SELECT i.external_id, i.id, false, i.request_digest, i.status, e.seq, e.entry_hash
            FROM incidents i JOIN ledger_events e ON e.incident_id = i.id AND e.kind = 'reported'
            WHERE i.platform_id = platform
              AND i.external_id = ANY(ARRAY(SELECT external_ids[k] FROM generate_subscripts(ids, 1) AS k
                                            WHERE NOT is_new[k]));
    END IF;
END $$;

-- Outbox: committed with each ledger event. The outbox relay in `ledger worker` sends the task soon after
-- commit (sent_at), the worker marks the row done, and a beat sweep re-sends rows never marked done.
CREATE TABLE IF NOT EXISTS outbox (
    id          bigserial PRIMARY KEY,
    task        text NOT NULL,
    args        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz,
    attempts    integer NOT NULL DEFAULT 0,
    done_at     timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox (id) WHERE done_at IS NULL;
-- The relay's claim reads only rows never sent: with workers behind, rows sent but not done pile up, and
-- walking them on every wake-up would slow the relay exactly when it matters.
CREATE INDEX IF NOT EXISTS outbox_unsent ON outbox (id) WHERE done_at IS NULL AND sent_at IS NULL;

-- Scores computed by the workers. computed_from_seq guards against an older recompute overwriting a newer.
CREATE TABLE IF NOT EXISTS risk_scores (
    subject_id        bigint PRIMARY KEY REFERENCES subjects (id),
    score             integer NOT NULL CHECK (score BETWEEN 0 AND 100),
    tier              text NOT NULL,
    restrictions      text[] NOT NULL,
    reasons           text[] NOT NULL,
    incidents         integer NOT NULL,
    platforms         integer NOT NULL,
    last_incident_at  timestamptz,
    policy_version    text NOT NULL,
    computed_from_seq bigint NOT NULL,
    computed_at       timestamptz NOT NULL,
    review_at         timestamptz
);
CREATE INDEX IF NOT EXISTS risk_scores_review ON risk_scores (review_at) WHERE review_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS risk_scores_policy ON risk_scores (policy_version);

-- Lookup audit trail: append-only; each row carries a digest of its own canonical content so that
-- `ledger verify` detects a rewritten row. Erasure after the retention period removes only the tokens.
CREATE TABLE IF NOT EXISTS lookups (
    id           uuid PRIMARY KEY,
    platform_id  bigint NOT NULL REFERENCES platforms (id),
    key_id       text NOT NULL,
    purpose      text NOT NULL,
    refund_ref   text,
    tokens       text[],
    salt         bytea,
    tokens_commitment text NOT NULL,
    tier         text NOT NULL,
    reasons      text[] NOT NULL,
    response     jsonb NOT NULL,
    at           timestamptz NOT NULL,
    row_hash     text NOT NULL
);
CREATE INDEX IF NOT EXISTS lookups_platform_at ON lookups (platform_id, at);
CREATE INDEX IF NOT EXISTS lookups_tokens ON lookups USING gin (tokens);

CREATE OR REPLACE FUNCTION lookups_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only the retention job may touch a row, and only to erase its tokens.
    IF TG_OP = 'UPDATE' AND current_setting('ledger.erasure', true) = 'on'
       AND NEW.tokens IS NULL AND NEW.refund_ref IS NULL AND NEW.salt IS NULL
       AND (NEW.id, NEW.platform_id, NEW.key_id, NEW.purpose, NEW.tokens_commitment, NEW.tier, NEW.reasons, NEW.at, NEW.row_hash)
           IS NOT DISTINCT FROM (OLD.id, OLD.platform_id, OLD.key_id, OLD.purpose, OLD.tokens_commitment, OLD.tier, OLD.reasons, OLD.at, OLD.row_hash)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'lookups is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS lookups_append_only ON lookups;
CREATE TRIGGER lookups_append_only BEFORE UPDATE OR DELETE ON lookups
    FOR EACH ROW EXECUTE FUNCTION lookups_guard();

-- Disputes opened by the operator's consumer channel.
CREATE TABLE IF NOT EXISTS disputes (
    id           uuid PRIMARY KEY,
    incident_id  uuid NOT NULL REFERENCES incidents (id),
    platform_id  bigint NOT NULL REFERENCES platforms (id),
    opened_by    bigint NOT NULL REFERENCES platforms (id),
    statement    text CHECK (length(statement) <= 500),
    contact_ref  text,
    status       text NOT NULL CHECK (status IN ('open', 'upheld', 'retracted', 'expired')),
    respond_by   timestamptz NOT NULL,
    opened_at    timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    basis        text
);
CREATE UNIQUE INDEX IF NOT EXISTS disputes_one_open ON disputes (incident_id) WHERE status = 'open';
CREATE INDEX IF NOT EXISTS disputes_platform_status ON disputes (platform_id, status);
CREATE INDEX IF NOT EXISTS disputes_due ON disputes (respond_by) WHERE status = 'open';

-- Evidence matching (docs/evidence.md). Each API process holds the matchable evidence hashes in memory
-- and polls this change log for incidents whose evidence or status changed. The triggers below write it
-- at commit (deferred) under one advisory lock, so ids are allocated in commit order: a reader that has
-- seen id N has seen every earlier change. It holds incident ids only, never hashes, so expiry's
-- erasure of evidence is not undone here.
CREATE TABLE IF NOT EXISTS evidence_changes (
    id          bigserial PRIMARY KEY,
    incident_id uuid NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION evidence_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target uuid;
BEGIN
    IF TG_TABLE_NAME = 'incidents' THEN
        target := NEW.id;
        -- A status change matters to the matcher only for an incident that has evidence.
        IF NOT EXISTS (SELECT 1 FROM incident_evidence WHERE incident_id = target) THEN
            RETURN NULL;
        END IF;
    ELSIF TG_OP = 'DELETE' THEN
        target := OLD.incident_id;
    ELSE
        target := NEW.incident_id;
    END IF;
    PERFORM pg_advisory_xact_lock(7311006);
    INSERT INTO evidence_changes (incident_id) VALUES (target);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS incident_evidence_changed ON incident_evidence;
CREATE CONSTRAINT TRIGGER incident_evidence_changed AFTER INSERT OR DELETE ON incident_evidence
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION evidence_log_change();

DROP TRIGGER IF EXISTS incident_status_changed ON incidents;
CREATE CONSTRAINT TRIGGER incident_status_changed AFTER UPDATE OF status ON incidents
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION evidence_log_change();
