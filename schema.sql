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
    -- The consortium operator's own account: the only platform that may hold `dispute` or `admin` keys,
    -- and the only one that may not report or look up.
    operator        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE platforms ADD COLUMN IF NOT EXISTS operator boolean NOT NULL DEFAULT false;

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

-- Consumer-rights scopes (a subject report names every reporter) belong to the operator alone, whatever
-- issues the key.
CREATE OR REPLACE FUNCTION api_keys_scopes_fit_platform() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    is_operator boolean;
BEGIN
    SELECT operator INTO is_operator FROM platforms WHERE id = NEW.platform_id;
    IF (is_operator AND NOT NEW.scopes <@ ARRAY['dispute', 'admin']::text[])
       OR (NOT is_operator AND NOT NEW.scopes <@ ARRAY['report', 'lookup']::text[]) THEN
        RAISE EXCEPTION 'scopes % do not fit this platform (operator: %)', NEW.scopes, is_operator
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

DROP TRIGGER IF EXISTS api_keys_scopes_fit ON api_keys;
CREATE TRIGGER api_keys_scopes_fit BEFORE INSERT OR UPDATE OF scopes, platform_id ON api_keys
    FOR EACH ROW EXECUTE FUNCTION api_keys_scopes_fit_platform();

-- Subjects: one consumer, many identifiers. Strong identifiers point straight at their subject's
-- root; a merge re-points the smaller subject's tokens (union by size, flat find).
CREATE TABLE IF NOT EXISTS subjects (
    id         bigserial PRIMARY KEY,
    merged_into bigint REFERENCES subjects (id),
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS identity_links (
    token      text PRIMARY KEY CHECK (octet_length(token) = 64 AND token !~ '[^0-9a-f]'),
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
-- When the platform told the consumer it would report them (征信业管理条例 Art. 15); required under the `cn`
-- profile, null for reports made under a profile that does not require it.
ALTER TABLE incidents ADD COLUMN IF NOT EXISTS consumer_notified_at timestamptz;
CREATE INDEX IF NOT EXISTS incidents_subject ON incidents (subject_id);
CREATE INDEX IF NOT EXISTS incidents_unlinked ON incidents (reported_at) WHERE subject_id IS NULL;
CREATE INDEX IF NOT EXISTS incidents_expiry ON incidents (occurred_at) WHERE status <> 'expired';

CREATE TABLE IF NOT EXISTS incident_identifiers (
    incident_id uuid NOT NULL REFERENCES incidents (id),
    id_type     text NOT NULL,
    token       text NOT NULL CHECK (octet_length(token) = 64 AND token !~ '[^0-9a-f]'),
    PRIMARY KEY (incident_id, token)
);
CREATE INDEX IF NOT EXISTS incident_identifiers_token ON incident_identifiers (token);

-- A token is 64 lowercase hex digits, checked without a bounded repetition: PostgreSQL's regex engine runs
-- `^[0-9a-f]{64}$` at about 10 µs a row, which was the largest single cost of inserting a report's tokens
-- (three per incident). Databases made with the old check get the new one; both accept the same strings.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['identity_links', 'incident_identifiers'] LOOP
        IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = t::regclass AND conname = t || '_token_check'
                   AND pg_get_constraintdef(oid) LIKE '%{64}%') THEN
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I, ADD CONSTRAINT %I CHECK '
                           '(octet_length(token) = 64 AND token !~ ''[^0-9a-f]'')',
                           t, t || '_token_check', t || '_token_check');
        END IF;
    END LOOP;
END $$;

CREATE TABLE IF NOT EXISTS incident_evidence (
    incident_id uuid NOT NULL REFERENCES incidents (id),
    pdq         bytea NOT NULL CHECK (length(pdq) = 32),
    quality     integer NOT NULL DEFAULT 100,
    PRIMARY KEY (incident_id, pdq)
);

-- The append-only history: every event the ledger records, committed with the leaf hash it will have in
-- the transparency log (docs/transparency.md). A writer inserts its events and a pending row each, in its
-- own transaction, and takes no log-wide lock: `ledger sequencer` orders them into the tree after commit.
-- prev_hash and entry_hash are the hash chain of the release before the log, kept on the events recorded
-- then (the upgrade made them the log's first leaves, in chain order); later events leave them NULL.
CREATE TABLE IF NOT EXISTS ledger_events (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind        text NOT NULL,
    incident_id uuid,
    platform_id bigint,
    at          timestamptz NOT NULL,
    payload     jsonb NOT NULL,
    leaf_hash   bytea NOT NULL CHECK (length(leaf_hash) = 32),
    prev_hash   text,
    entry_hash  text
);
CREATE INDEX IF NOT EXISTS ledger_events_incident ON ledger_events (incident_id);

CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS ledger_events_append_only ON ledger_events;
CREATE TRIGGER ledger_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Events committed but not yet in the tree. The sequencer deletes what it integrates, in the transaction
-- that adds the leaves, so an event is integrated exactly once whatever the order writers commit in.
CREATE TABLE IF NOT EXISTS log_pending (
    event_id  bigint PRIMARY KEY REFERENCES ledger_events (id),
    leaf_hash bytea NOT NULL
);

-- The tree. Leaf idx has the contiguous indices 0..size-1, written only by the sequencer holding its
-- advisory lock. log_nodes holds the complete interior subtrees from level 8 up (level-L node i covers
-- leaves [i*2^L, (i+1)*2^L)): a node below level 8 is recomputed from the at most 256 leaves under it
-- (ledger/storage/log.py), so any proof is one read of a range of leaves and about log2(size) - 8 nodes.
-- event_id has no foreign key: the sequencer copies it from log_pending, whose key was checked when the
-- event was recorded, events can be neither deleted nor changed, and `ledger verify` re-derives every leaf
-- from its event row; the check cost about a quarter of each leaf's insert.
CREATE TABLE IF NOT EXISTS log_leaves (
    idx           bigint PRIMARY KEY CHECK (idx >= 0),
    event_id      bigint NOT NULL UNIQUE,
    leaf_hash     bytea NOT NULL CHECK (length(leaf_hash) = 32),
    integrated_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE log_leaves DROP CONSTRAINT IF EXISTS log_leaves_event_id_fkey;
CREATE INDEX IF NOT EXISTS log_leaves_hash ON log_leaves (leaf_hash);

CREATE TABLE IF NOT EXISTS log_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

-- Signed checkpoints (C2SP tlog-checkpoint notes), each signed only after the leaves it covers committed.
CREATE TABLE IF NOT EXISTS log_checkpoints (
    tree_size bigint PRIMARY KEY CHECK (tree_size >= 0),
    root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
    note      text NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now()
);

-- Witness cosignatures (C2SP tlog-cosignature) on a checkpoint, one per cosigner key; checked on receipt.
CREATE TABLE IF NOT EXISTS log_cosignatures (
    tree_size   bigint NOT NULL REFERENCES log_checkpoints (tree_size),
    cosigner    text NOT NULL,  -- the cosigner's verifier key (vkey)
    line        text NOT NULL,  -- the signature line, as appended to the note
    signed_time bigint NOT NULL,
    platform_id bigint NOT NULL REFERENCES platforms (id),
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tree_size, cosigner)
);

-- The verifier keys (C2SP vkeys) the sequencer has signed with, recorded when it starts. `ledger verify`
-- checks signatures with the configured key when it has one, and otherwise with these: enough for an
-- operator's own check from a replica. Members pin the key themselves (`ledger log verify-remote`).
CREATE TABLE IF NOT EXISTS log_keys (
    vkey       text PRIMARY KEY,
    first_used timestamptz NOT NULL DEFAULT now()
);

DROP TRIGGER IF EXISTS log_leaves_append_only ON log_leaves;
CREATE TRIGGER log_leaves_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON log_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
DROP TRIGGER IF EXISTS log_nodes_append_only ON log_nodes;
CREATE TRIGGER log_nodes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON log_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
DROP TRIGGER IF EXISTS log_checkpoints_append_only ON log_checkpoints;
CREATE TRIGGER log_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON log_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Record events: each gets its row and a pending row, in the caller's transaction, with no lock beyond
-- the rows it inserts. The leaf is the one defined in ledger/domain/chain.py (`leaf_bytes`): canonical JSON
-- {"at","incident_id","kind","payload","platform_id"}, hashed as an RFC 9162 leaf, SHA-256(0x00 || leaf).
-- The caller passes each payload already canonical (sorted keys, no whitespace, ASCII escapes) and this
-- splices the other fields around it in sorted-key order; `ledger verify` re-derives every leaf from the
-- stored row. The time is the moment of the insert (clock_timestamp), not the transaction's start.
DROP FUNCTION IF EXISTS ledger_append(text[], uuid[], text[]);
CREATE OR REPLACE FUNCTION ledger_append(kinds text[], incident_ids uuid[], platform_ids bigint[], payloads text[])
RETURNS TABLE (id bigint, leaf_hash bytea, at timestamptz) LANGUAGE plpgsql AS $$
DECLARE
    n          integer := coalesce(cardinality(kinds), 0);
    stamp      timestamptz := clock_timestamp();
    stamp_text text := to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');
    hashes     bytea[] := '{}';
BEGIN
    IF coalesce(cardinality(incident_ids), 0) <> n OR coalesce(cardinality(payloads), 0) <> n
       OR coalesce(cardinality(platform_ids), 0) <> n THEN
        RAISE EXCEPTION 'ledger_append: kinds, incident_ids, platform_ids and payloads differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    FOR i IN 1 .. n LOOP
        -- A kind is spliced in unescaped, so it must be a string JSON would not escape.
        IF kinds[i] IS NULL OR kinds[i] !~ '^[A-Za-z0-9_]+$' THEN
            RAISE EXCEPTION 'ledger_append: event kind % must match [A-Za-z0-9_]+', quote_literal(kinds[i])
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        hashes[i] := sha256('\x00'::bytea || convert_to(concat(
            '{"at":"', stamp_text,
            '","incident_id":', coalesce('"' || incident_ids[i]::text || '"', 'null'),
            ',"kind":"', kinds[i], '","payload":', payloads[i],
            ',"platform_id":', coalesce(platform_ids[i]::text, 'null'), '}'), 'UTF8'));
    END LOOP;
    RETURN QUERY
    WITH ins AS (
        INSERT INTO ledger_events (kind, incident_id, platform_id, at, payload, leaf_hash)
        SELECT e.kind, e.incident_id, e.platform_id, stamp, e.payload::jsonb, e.leaf_hash
        FROM unnest(kinds, incident_ids, platform_ids, payloads, hashes)
             WITH ORDINALITY AS e (kind, incident_id, platform_id, payload, leaf_hash, ord)
        ORDER BY e.ord
        RETURNING ledger_events.id, ledger_events.leaf_hash, ledger_events.at),
    pend AS (
        INSERT INTO log_pending (event_id, leaf_hash) SELECT ins.id, ins.leaf_hash FROM ins)
    SELECT ins.id, ins.leaf_hash, ins.at FROM ins ORDER BY ins.id;
END $$;

-- Report incidents in one statement, so that a report is one round trip and one transaction (called on
-- an autocommit connection by ledger/storage/incidents.py). Items are parallel arrays, one element per
-- incident; a token or evidence hash names its incident by its 1-based position. Incidents whose
-- (platform, external_id) already exists are skipped (a concurrent identical insert waits on the unique
-- index, then skips). Each inserted incident gets its tokens, its evidence, one outbox row for all of them
-- and a `reported` event with its pending log leaf; no log-wide lock is taken. Returns one row per item:
-- the new incident (created) or the existing one, with its leaf hash and the time it was received.
-- Earlier signatures (before `notified`; before the log changed what it returns) are dropped first, so
-- that the new one neither becomes an overload nor fails to replace a different return type.
DROP FUNCTION IF EXISTS ledger_report(bigint, uuid[], text[], text[], text[], text[], bigint[], text[],
    timestamptz[], bytea[], text[], integer[], text[], text[], integer[], bytea[], text);
DROP FUNCTION IF EXISTS ledger_report(bigint, uuid[], text[], text[], text[], text[], bigint[], text[],
    timestamptz[], bytea[], timestamptz[], text[], integer[], text[], text[], integer[], bytea[], text);
CREATE OR REPLACE FUNCTION ledger_report(
    platform bigint, ids uuid[], external_ids text[], digests text[], categories text[],
    confirmations text[], amounts bigint[], currencies text[], occurred timestamptz[], salts bytea[],
    notified timestamptz[], payloads text[], token_items integer[], token_types text[], tokens text[],
    evidence_items integer[], evidence_pdqs bytea[], outbox_task text)
RETURNS TABLE (r_external_id text, r_id uuid, r_created boolean, r_digest text, r_status text,
               r_leaf_hash bytea, r_received_at timestamptz) LANGUAGE plpgsql AS $$
DECLARE
    chosen integer[];  -- positions of the inserted items, in input order
    is_new boolean[] := array_fill(false, ARRAY[coalesce(cardinality(ids), 0)]);
    pos    integer;
BEGIN
    -- Joins and position lookups, never `= ANY(array)` over the batch: that is quadratic for 1,000 items.
    WITH ins AS (
        INSERT INTO incidents (id, platform_id, external_id, request_digest, category, confirmation,
                               amount_minor, currency, occurred_at, salt, consumer_notified_at)
        SELECT u.id, platform, u.external_id, u.digest, u.category, u.confirmation, u.amount, u.currency,
               u.occurred, u.salt, u.notified
        FROM unnest(ids, external_ids, digests, categories, confirmations, amounts, currencies, occurred, salts,
                    notified)
             AS u (id, external_id, digest, category, confirmation, amount, currency, occurred, salt, notified)
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
                   'active'::text, a.leaf_hash, a.at
            FROM ledger_append(array_fill('reported'::text, ARRAY[cardinality(chosen)]),
                               (SELECT array_agg(ids[c] ORDER BY o) FROM unnest(chosen) WITH ORDINALITY AS x (c, o)),
                               array_fill(platform, ARRAY[cardinality(chosen)]),
                               (SELECT array_agg(payloads[c] ORDER BY o) FROM unnest(chosen) WITH ORDINALITY AS x (c, o)))
                 WITH ORDINALITY AS a (id, leaf_hash, at, ord);
    END IF;
    -- The rest already existed. Skipped when every item was new, the common case.
    IF coalesce(cardinality(chosen), 0) < cardinality(ids) THEN
        RETURN QUERY
            SELECT i.external_id, i.id, false, i.request_digest, i.status, e.leaf_hash, e.at
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

-- Lookup audit trail (the inquiry trail): append-only. Each row is a leaf of the inquiry log below, whose
-- leaf (ledger/domain/decisions.py `inquiry_leaf`) covers the parts never erased and a digest of the answer
-- as sent, so `ledger verify` detects a rewritten, cut or deleted row. Erasure after the retention period
-- removes only the tokens, the refund reference and the salt.
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
    leaf_hash    bytea NOT NULL CHECK (length(leaf_hash) = 32)
);
-- The platform's reference for the agent behind a manual review (征信业管理条例 Art. 22: who queried).
ALTER TABLE lookups ADD COLUMN IF NOT EXISTS operator_ref text CHECK (length(operator_ref) <= 128);
CREATE INDEX IF NOT EXISTS lookups_platform_at ON lookups (platform_id, at);
CREATE INDEX IF NOT EXISTS lookups_tokens ON lookups USING gin (tokens);

CREATE OR REPLACE FUNCTION lookups_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Only the retention job may touch a row, and only to erase its tokens.
    IF TG_OP = 'UPDATE' AND current_setting('ledger.erasure', true) = 'on'
       AND NEW.tokens IS NULL AND NEW.refund_ref IS NULL AND NEW.salt IS NULL
       AND (NEW.id, NEW.platform_id, NEW.key_id, NEW.purpose, NEW.tokens_commitment, NEW.tier, NEW.reasons, NEW.at, NEW.leaf_hash, NEW.operator_ref, NEW.response)
           IS NOT DISTINCT FROM (OLD.id, OLD.platform_id, OLD.key_id, OLD.purpose, OLD.tokens_commitment, OLD.tier, OLD.reasons, OLD.at, OLD.leaf_hash, OLD.operator_ref, OLD.response)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'lookups is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS lookups_append_only ON lookups;
CREATE TRIGGER lookups_append_only BEFORE UPDATE OR DELETE ON lookups
    FOR EACH ROW EXECUTE FUNCTION lookups_guard();

-- The inquiry log: a second Merkle log, with its own origin, over the lookup trail. Its leaves are the
-- lookups' `leaf_hash`es: salted commitments and digests only, never a token or an identifier. A lookup's
-- audit write inserts its row and a pending row in one statement (ledger/storage/audit.py) and takes no
-- lock; `ledger sequencer` gives pending rows contiguous indices, as for the event log above. `seq` orders
-- them (the commit order of concurrent writers does not matter: the sequencer takes what is committed).
CREATE TABLE IF NOT EXISTS inquiry_pending (
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    lookup_id uuid NOT NULL,
    leaf_hash bytea NOT NULL
);

CREATE TABLE IF NOT EXISTS inquiry_leaves (
    idx           bigint PRIMARY KEY CHECK (idx >= 0),
    lookup_id     uuid NOT NULL UNIQUE REFERENCES lookups (id),
    leaf_hash     bytea NOT NULL CHECK (length(leaf_hash) = 32),
    integrated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS inquiry_nodes (
    level smallint NOT NULL CHECK (level BETWEEN 1 AND 63),
    idx   bigint NOT NULL CHECK (idx >= 0),
    hash  bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (level, idx)
);

CREATE TABLE IF NOT EXISTS inquiry_checkpoints (
    tree_size bigint PRIMARY KEY CHECK (tree_size >= 0),
    root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
    note      text NOT NULL,
    signed_at timestamptz NOT NULL DEFAULT now()
);

DROP TRIGGER IF EXISTS inquiry_leaves_append_only ON inquiry_leaves;
CREATE TRIGGER inquiry_leaves_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON inquiry_leaves
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
DROP TRIGGER IF EXISTS inquiry_nodes_append_only ON inquiry_nodes;
CREATE TRIGGER inquiry_nodes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON inquiry_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();
DROP TRIGGER IF EXISTS inquiry_checkpoints_append_only ON inquiry_checkpoints;
CREATE TRIGGER inquiry_checkpoints_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON inquiry_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- Subject access reports given out, counted per consumer and calendar year (征信业管理条例 Art. 17: two free
-- a year). `tokens` is erased with the lookup trail's (ledger/services/retention.py). Each row is also the
-- record of who opened a consumer's file and when (PIPL Art. 45, 征信业管理条例 Art. 22): the operator's
-- platform and key, and a salted commitment to the identifiers asked about, which outlives the erasure.
-- Append-only but for that erasure (the trigger below; the application's role may update `tokens` only).
CREATE TABLE IF NOT EXISTS subject_reports (
    id                uuid PRIMARY KEY,
    tokens            text[],
    at                timestamptz NOT NULL,
    platform_id       bigint REFERENCES platforms (id),
    key_id            text,
    salt              bytea,
    tokens_commitment text
);
ALTER TABLE subject_reports ADD COLUMN IF NOT EXISTS platform_id bigint REFERENCES platforms (id);
ALTER TABLE subject_reports ADD COLUMN IF NOT EXISTS key_id text;
ALTER TABLE subject_reports ADD COLUMN IF NOT EXISTS salt bytea;
ALTER TABLE subject_reports ADD COLUMN IF NOT EXISTS tokens_commitment text;
CREATE INDEX IF NOT EXISTS subject_reports_tokens ON subject_reports USING gin (tokens);
CREATE INDEX IF NOT EXISTS subject_reports_platform_at ON subject_reports (platform_id, at);

CREATE OR REPLACE FUNCTION subject_reports_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.tokens IS NULL
       AND (NEW.id, NEW.at, NEW.platform_id, NEW.key_id, NEW.salt, NEW.tokens_commitment)
           IS NOT DISTINCT FROM (OLD.id, OLD.at, OLD.platform_id, OLD.key_id, OLD.salt, OLD.tokens_commitment)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'subject_reports is append-only: % refused', TG_OP USING ERRCODE = 'insufficient_privilege';
END $$;

DROP TRIGGER IF EXISTS subject_reports_append_only ON subject_reports;
CREATE TRIGGER subject_reports_append_only BEFORE UPDATE OR DELETE ON subject_reports
    FOR EACH ROW EXECUTE FUNCTION subject_reports_guard();
DROP TRIGGER IF EXISTS subject_reports_no_truncate ON subject_reports;
CREATE TRIGGER subject_reports_no_truncate BEFORE TRUNCATE ON subject_reports
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

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

-- Reference photos (docs/evidence.md, "Reference photos"): the PDQ hashes of what a platform sells
-- (`listing`) or ships (`shipping`), under the platform's own reference (a listing id, an order
-- reference). Hashes only, never image bytes. Listing hashes are matched for every member; shipping
-- hashes only for their own platform, and only until `expires_at`. A checker learns the kind and the
-- distance, never the platform or the reference.
CREATE TABLE IF NOT EXISTS reference_photos (
    platform_id   bigint NOT NULL REFERENCES platforms (id),
    kind          text NOT NULL CHECK (kind IN ('listing', 'shipping')),
    reference     text NOT NULL CHECK (length(reference) BETWEEN 1 AND 128),
    pdq           bytea NOT NULL CHECK (length(pdq) = 32),
    registered_at timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz,
    PRIMARY KEY (platform_id, kind, reference, pdq)
);
CREATE INDEX IF NOT EXISTS reference_photos_expiry ON reference_photos (expires_at) WHERE expires_at IS NOT NULL;

-- Which references changed, in commit order (the same advisory-lock scheme as evidence_changes), so each
-- API process applies registrations and removals incrementally. No hash is kept here.
CREATE TABLE IF NOT EXISTS reference_changes (
    id          bigserial PRIMARY KEY,
    platform_id bigint NOT NULL,
    kind        text NOT NULL,
    reference   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION reference_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed reference_photos;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    PERFORM pg_advisory_xact_lock(7311007);
    INSERT INTO reference_changes (platform_id, kind, reference)
        VALUES (changed.platform_id, changed.kind, changed.reference);
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS reference_photo_changed ON reference_photos;
CREATE CONSTRAINT TRIGGER reference_photo_changed AFTER INSERT OR DELETE ON reference_photos
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION reference_log_change();

-- The operator console (ledger/console). Its overview counts reports per day over the last weeks; a BRIN
-- index on the time of report costs next to nothing per insert, and incidents are appended in report
-- order, so it narrows that count to the recent block ranges.
CREATE INDEX IF NOT EXISTS incidents_reported_brin ON incidents USING brin (reported_at);

-- Every action taken in the console, with who took it: the platform and key id of the signed-in session
-- (never the key). Append-only, like the ledger. `detail` names targets (a platform slug, a key id, a
-- dispute id), never an identifier or a token.
CREATE TABLE IF NOT EXISTS console_actions (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    platform_id bigint REFERENCES platforms (id),
    key_id      text,
    role        text NOT NULL CHECK (role IN ('operator', 'desk', 'anonymous')),
    action      text NOT NULL CHECK (action ~ '^[a-z_]+$'),
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS console_actions_at ON console_actions (at);

DROP TRIGGER IF EXISTS console_actions_append_only ON console_actions;
CREATE TRIGGER console_actions_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON console_actions
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();

-- The result of each `ledger verify` run, so that the console can show the last one and when it ran.
CREATE TABLE IF NOT EXISTS verification_runs (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    ok       boolean NOT NULL,
    result   jsonb NOT NULL
);

-- Signed webhooks (docs/webhooks.md). A platform's endpoints, with the event types each wants. The secret
-- signs every delivery (Standard Webhooks), so it is kept as issued; it is shown to the platform once, at
-- creation, and never returned or logged afterwards.
CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id                   uuid PRIMARY KEY,
    platform_id          bigint NOT NULL REFERENCES platforms (id),
    url                  text NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    events               text[] NOT NULL CHECK (cardinality(events) > 0),
    secret               text NOT NULL,
    status               text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    status_reason        text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    status_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhook_endpoints_platform ON webhook_endpoints (platform_id);

-- One event for one recipient platform, committed with the change that caused it (with an outbox row that
-- fans it out to the platform's endpoints). `id` is the `webhook-id` every attempt carries.
CREATE TABLE IF NOT EXISTS webhook_events (
    id          text PRIMARY KEY,
    type        text NOT NULL,
    platform_id bigint NOT NULL REFERENCES platforms (id),
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One event to one endpoint. A worker claims it by setting `lease_until` (a killed worker's claim runs
-- out, and the sweep sends it again); failures wait `next_attempt_at` (exponential, for up to 24 hours).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id               uuid PRIMARY KEY,
    event_id         text NOT NULL REFERENCES webhook_events (id),
    endpoint_id      uuid NOT NULL REFERENCES webhook_endpoints (id),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'abandoned', 'skipped')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    first_attempt_at timestamptz,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at);

-- The delivery log: every attempt, as the platform can read it for its endpoint.
CREATE TABLE IF NOT EXISTS webhook_attempts (
    id          bigserial PRIMARY KEY,
    delivery_id uuid NOT NULL REFERENCES webhook_deliveries (id),
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (id),
    at          timestamptz NOT NULL DEFAULT now(),
    status_code integer,
    error       text,
    duration_ms integer NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_attempts_endpoint ON webhook_attempts (endpoint_id, id);

-- The application's database role. Triggers refuse changes to the append-only tables, but a table's
-- owner can disable its triggers; so the service runs as `ledger_app` (LEDGER_DB_ROLE, set on every
-- pooled connection), which does not own the tables and holds neither UPDATE nor DELETE on the ledger's
-- history: the chain's events, the logs' leaves, nodes and checkpoints, the subject-report record and the console's action log. On `lookups` and
-- `subject_reports` it may update only the columns the retention job erases (the triggers check the rest). Everything else is the projection or
-- working state the service maintains. `ledger db init` runs as the owner and grants these.
-- Creating the role needs CREATEROLE; without it, create `ledger_app` once by hand (docs/operations.md).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_app') THEN
        CREATE ROLE ledger_app NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;  -- a concurrent init created it
    WHEN insufficient_privilege THEN RAISE NOTICE 'cannot create role ledger_app: create it by hand';
END $$;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_app') THEN
        GRANT USAGE ON SCHEMA public TO ledger_app;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ledger_app;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ledger_app;
        REVOKE UPDATE, DELETE, TRUNCATE ON ledger_events, log_leaves, log_nodes, subject_reports, lookups,
            console_actions, log_checkpoints, inquiry_leaves, inquiry_nodes, inquiry_checkpoints FROM ledger_app;
        GRANT UPDATE (tokens, refund_ref, salt) ON lookups TO ledger_app;
        GRANT UPDATE (tokens) ON subject_reports TO ledger_app;
    END IF;
END $$;
