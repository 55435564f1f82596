"""Team mode: the ledger, named budgets, the response cache, map checkpoints and batch jobs in
PostgreSQL.

``Session(database="postgresql://...")`` (or ``HOLYNB_DATABASE_URL``) keeps them in one
database every process and machine of a team shares; without one, SQLite under
``HOLYNB_HOME`` stays the default. psycopg (``pip install holynb[team]``) is imported only
when a database is given.
"""
