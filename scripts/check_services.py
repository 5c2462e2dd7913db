"""Say clearly, before the suite starts, whether the services it needs answer."""

from __future__ import annotations

import os
import sys

import psycopg
import redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PG = {
    "host": os.environ.get("PGHOST", "127.0.0.1"),
    "port": os.environ.get("PGPORT", "5432"),
    "user": os.environ.get("PGUSER", "postgres"),
    "dbname": "postgres",
}

problems = []
try:
    redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
except (redis.RedisError, OSError) as exc:
    problems.append(
        f"Redis at {REDIS_URL} does not answer ({exc}).\n"
        "  Start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''"
    )
try:
    psycopg.connect(connect_timeout=3, **PG).close()
except psycopg.Error as exc:
    problems.append(
        f"PostgreSQL at {PG['host']}:{PG['port']} does not answer ({exc}).\n"
        "  Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
    )
if problems:
    print("The test suite needs real services:\n" + "\n".join(problems), file=sys.stderr)
    sys.exit(2)
print(f"services: Redis at {REDIS_URL} and PostgreSQL at {PG['host']}:{PG['port']} answer")
