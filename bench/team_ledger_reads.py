"""How fast the team ledger reads a million rows: team_ledger() whole, one user's, the last hour's,
and summary(by="user"). The rows are made in the database with generate_series (50 users, 30
days). Usage: python bench/team_ledger_reads.py [POSTGRESQL_URL] (default: a throwaway cluster
from tests/pg.py, which needs Debian's postgresql package)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

ROWS = 1_000_000

FILL = """
INSERT INTO holynb_calls (ts, model, kind, ok, prompt_tokens, completion_tokens, cost_usd,
    latency_ms, attempts, tag, "user", session)
SELECT now() - (i %% 2592000) * interval '1 second', 'model-' || (i %% 5), 'chat', i %% 50 <> 0,
       100 + i %% 400, 20 + i %% 200, (100 + i %% 400) * 3e-6 + (20 + i %% 200) * 15e-6,
       50 + i %% 900, 1, 'cell-' || (i %% 40), 'user-' || (i %% 50), 's' || (i %% 1000)
FROM generate_series(1, %s) AS i
"""


def timed(what: str, fn) -> None:
    started = time.perf_counter()
    result = fn()
    print(f"{what:<40} {time.perf_counter() - started:8.3f} s  ({len(result):,} rows)")


def main() -> None:
    import holynb
    from holynb.team.database import Database
    from holynb.team.ledger import TeamLog

    cluster = None
    if len(sys.argv) > 1:
        url = sys.argv[1]
    else:
        from tests.pg import start_cluster

        cluster = start_cluster()
        url = cluster.url
    try:
        db = Database.of(url).ensure()
        with db.connection() as conn:
            started = time.perf_counter()
            conn.execute(FILL, (ROWS,))
            conn.execute("ANALYZE holynb_calls")
            print(
                f"{'insert 1,000,000 rows (generate_series)':<40} "
                f"{time.perf_counter() - started:8.3f} s"
            )
        log = TeamLog(db, user="bench")
        hour = datetime.now(UTC) - timedelta(hours=1)
        day = datetime.now(UTC) - timedelta(days=1)
        timed("team_ledger(since=last hour)", lambda: log.frame(since=hour))
        timed("team_ledger(since=last day)", lambda: log.frame(since=day))
        timed("team_ledger(user='user-7')", lambda: log.frame(user="user-7"))
        timed("team_ledger(user=, since=last day)", lambda: log.frame(since=day, user="user-7"))
        timed('summary(by="user"), all rows', log.by_user)
        timed('summary(by="user", since=last day)', lambda: log.by_user(since=day))
        timed("team_ledger(), all rows", log.frame)
        print(f"holynb {holynb.__version__}")
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    main()
