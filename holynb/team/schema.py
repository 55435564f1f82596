"""The team database's schema: versioned, forward-only migrations and the table that counts them.

``holynb_schema_version`` holds one row per applied migration (its number and when). ``migrate``
runs under a transaction-level advisory lock, so processes opening a new database at once apply
each migration exactly once. A database at a version newer than this holynb knows is refused
(upgrade holynb); append new migrations, never edit old ones.

Tables (all prefixed ``holynb_``): ``calls`` (the ledger: every call of every user, with
``user``, ``notebook``, ``session`` and ``budget``), ``budgets`` (named limits: ``limit_usd``,
``spent_usd`` in the current ``period``), ``leases`` (one per process, renewed by a heartbeat)
and ``holds`` (a call's worst case in flight, tied to a lease; ``holynb_reserve`` makes one,
``holynb_reserve_many`` several in one statement), ``answers`` (the shared cache),
``items`` (shared map checkpoints: one row per request key per job, claimed under a lease),
``jobs`` (batch jobs: a manifest's JSON and the request lines, who made it and when; their
budget holds hang on a lease ``job:<id>`` of their own) and ``batch_parts`` (the key of each
batch part whose results are in the ledger, written with them: each is recorded once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from holynb.errors import ConfigurationError

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

_LOCK_ID = 0x686F6C796E62  # "holynb": the advisory lock migrations take

MIGRATIONS: tuple[str, ...] = (
    # 1: the ledger
    """
    CREATE TABLE holynb_calls (
        id bigserial PRIMARY KEY,
        ts timestamptz NOT NULL,
        model text NOT NULL,
        kind text NOT NULL,
        ok boolean NOT NULL,
        error text,
        prompt_tokens bigint NOT NULL DEFAULT 0,
        completion_tokens bigint NOT NULL DEFAULT 0,
        cached_tokens bigint NOT NULL DEFAULT 0,
        reasoning_tokens bigint NOT NULL DEFAULT 0,
        cost_usd double precision,
        latency_ms double precision,
        ttft_ms double precision,
        attempts integer NOT NULL DEFAULT 1,
        request_id text,
        tag text,
        interrupted boolean NOT NULL DEFAULT false,
        usage_estimated boolean NOT NULL DEFAULT false,
        cache_hit boolean NOT NULL DEFAULT false,
        saved_usd double precision,
        "user" text NOT NULL,
        notebook text,
        session text NOT NULL,
        budget text
    );
    CREATE INDEX holynb_calls_ts ON holynb_calls (ts);
    CREATE INDEX holynb_calls_user_ts ON holynb_calls ("user", ts);
    """,
    # 2: named budgets, leases and holds
    """
    CREATE TABLE holynb_budgets (
        name text PRIMARY KEY,
        limit_usd double precision NOT NULL CHECK (limit_usd > 0),
        spent_usd double precision NOT NULL DEFAULT 0 CHECK (spent_usd >= 0),
        period text CHECK (period IN ('day', 'month')),
        period_start timestamptz,
        created timestamptz NOT NULL DEFAULT now(),
        updated timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE holynb_leases (
        id text PRIMARY KEY,
        "user" text NOT NULL,
        host text NOT NULL,
        pid integer NOT NULL,
        expires timestamptz NOT NULL
    );
    CREATE TABLE holynb_holds (
        id bigserial PRIMARY KEY,
        budget text NOT NULL REFERENCES holynb_budgets (name) ON DELETE CASCADE,
        lease text NOT NULL,
        usd double precision NOT NULL CHECK (usd >= 0),
        created timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX holynb_holds_budget ON holynb_holds (budget);
    CREATE INDEX holynb_holds_lease ON holynb_holds (lease);
    CREATE INDEX holynb_calls_budget_ts ON holynb_calls (budget, ts) WHERE budget IS NOT NULL;
    CREATE FUNCTION holynb_reserve(p_budget text, p_lease text, p_usd double precision)
    RETURNS TABLE (o_hold bigint, o_limit double precision, o_spent double precision,
                   o_held double precision)
    LANGUAGE plpgsql AS $$
    DECLARE
        b holynb_budgets%ROWTYPE;
        cur timestamptz;
        h double precision;
        new_id bigint;
    BEGIN
        -- the budget's row lock serialises every reservation on it, on every machine
        SELECT * INTO b FROM holynb_budgets WHERE name = p_budget FOR UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF b.period IS NOT NULL THEN
            cur := date_trunc(b.period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
            IF b.period_start IS NULL OR b.period_start < cur THEN
                SELECT coalesce(sum(greatest(c.cost_usd, 0)), 0) INTO b.spent_usd
                FROM holynb_calls c WHERE c.budget = p_budget AND c.ts >= cur;
                UPDATE holynb_budgets SET spent_usd = b.spent_usd, period_start = cur,
                    updated = now() WHERE name = p_budget;
            END IF;
        END IF;
        -- holds of processes whose lease ran out (killed, machine lost) end here
        DELETE FROM holynb_holds x WHERE x.budget = p_budget AND NOT EXISTS (
            SELECT 1 FROM holynb_leases l WHERE l.id = x.lease AND l.expires > now());
        SELECT coalesce(sum(x.usd), 0) INTO h FROM holynb_holds x WHERE x.budget = p_budget;
        IF b.spent_usd + h >= b.limit_usd OR b.spent_usd + h + p_usd > b.limit_usd THEN
            RETURN QUERY SELECT NULL::bigint, b.limit_usd, b.spent_usd, h;
            RETURN;
        END IF;
        INSERT INTO holynb_holds (budget, lease, usd) VALUES (p_budget, p_lease, p_usd)
            RETURNING id INTO new_id;
        RETURN QUERY SELECT new_id, b.limit_usd, b.spent_usd, h;
    END
    $$;
    """,
    # 3: the shared response cache
    """
    CREATE TABLE holynb_answers (
        key text PRIMARY KEY,
        model text NOT NULL,
        created timestamptz NOT NULL DEFAULT now(),
        value text NOT NULL
    );
    """,
    # 4: shared map checkpoints
    """
    CREATE TABLE holynb_items (
        job text NOT NULL,
        key text NOT NULL,
        position integer NOT NULL,
        lease text,
        claimed timestamptz,
        done boolean NOT NULL DEFAULT false,
        value text,
        PRIMARY KEY (job, key)
    );
    CREATE INDEX holynb_items_open ON holynb_items (job, position) WHERE NOT done;
    """,
    # 5: service tiers and prompt caching (the ledger's columns of the cheaper paths)
    """
    ALTER TABLE holynb_calls ADD COLUMN service_tier text;
    ALTER TABLE holynb_calls ADD COLUMN cache_write_tokens bigint NOT NULL DEFAULT 0;
    ALTER TABLE holynb_calls ADD COLUMN cache_ttl text;
    """,
    # 6: batch jobs (their manifests and request lines), shared by every machine
    """
    CREATE TABLE holynb_jobs (
        id text PRIMARY KEY,
        "user" text NOT NULL,
        created timestamptz NOT NULL DEFAULT now(),
        updated timestamptz NOT NULL DEFAULT now(),
        manifest text,
        requests bytea
    );
    CREATE INDEX holynb_jobs_created ON holynb_jobs (created, id);
    CREATE TABLE holynb_batch_parts (
        key text PRIMARY KEY,
        recorded timestamptz NOT NULL DEFAULT now()
    );
    """,
    # 7: several reservations in one statement, with one lock, one sweep and one sum (the
    # amounts in order, each checked as holynb_reserve checked one after another); then
    # holynb_reserve is that with one amount, so the rule lives once
    """
    CREATE FUNCTION holynb_reserve_many(p_budget text, p_lease text, p_usd double precision[])
    RETURNS TABLE (o_hold bigint, o_limit double precision, o_spent double precision,
                   o_held double precision)
    LANGUAGE plpgsql AS $$
    DECLARE
        b holynb_budgets%ROWTYPE;
        cur timestamptz;
        h double precision;
        usd double precision;
        new_id bigint;
    BEGIN
        -- the budget's row lock serialises every reservation on it, on every machine
        SELECT * INTO b FROM holynb_budgets WHERE name = p_budget FOR UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        IF b.period IS NOT NULL THEN
            cur := date_trunc(b.period, now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
            IF b.period_start IS NULL OR b.period_start < cur THEN
                SELECT coalesce(sum(greatest(c.cost_usd, 0)), 0) INTO b.spent_usd
                FROM holynb_calls c WHERE c.budget = p_budget AND c.ts >= cur;
                UPDATE holynb_budgets SET spent_usd = b.spent_usd, period_start = cur,
                    updated = now() WHERE name = p_budget;
            END IF;
        END IF;
        -- holds of processes whose lease ran out (killed, machine lost) end here
        DELETE FROM holynb_holds x WHERE x.budget = p_budget AND NOT EXISTS (
            SELECT 1 FROM holynb_leases l WHERE l.id = x.lease AND l.expires > now());
        SELECT coalesce(sum(x.usd), 0) INTO h FROM holynb_holds x WHERE x.budget = p_budget;
        -- each amount in order, as holynb_reserve would one after another
        FOREACH usd IN ARRAY p_usd LOOP
            IF b.spent_usd + h >= b.limit_usd OR b.spent_usd + h + usd > b.limit_usd THEN
                o_hold := NULL;
            ELSE
                INSERT INTO holynb_holds (budget, lease, usd) VALUES (p_budget, p_lease, usd)
                    RETURNING id INTO new_id;
                o_hold := new_id;
            END IF;
            o_limit := b.limit_usd; o_spent := b.spent_usd; o_held := h;
            RETURN NEXT;
            IF o_hold IS NOT NULL THEN
                h := h + usd;
            END IF;
        END LOOP;
    END
    $$;
    -- one rule for both: a single reservation is a group of one
    CREATE OR REPLACE FUNCTION holynb_reserve(p_budget text, p_lease text, p_usd double precision)
    RETURNS TABLE (o_hold bigint, o_limit double precision, o_spent double precision,
                   o_held double precision)
    LANGUAGE sql AS $$
        SELECT * FROM holynb_reserve_many(p_budget, p_lease, ARRAY[p_usd])
    $$;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: psycopg.Connection[Any], where: str) -> int:
    """Bring the database up to ``SCHEMA_VERSION`` in one transaction; the version it had."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS holynb_schema_version ("
            " version integer PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM holynb_schema_version")
        found = row.fetchone()
        version = int(found[0]) if found else 0
        if version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"The team database {where} has holynb schema version {version}, newer than "
                f"this holynb knows ({SCHEMA_VERSION}): upgrade holynb (pip install -U holynb)."
            )
        for number in range(version, SCHEMA_VERSION):
            conn.execute(MIGRATIONS[number])  # our own literal SQL
            conn.execute("INSERT INTO holynb_schema_version (version) VALUES (%s)", (number + 1,))
    return version
