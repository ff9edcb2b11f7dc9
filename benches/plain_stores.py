"""The baseline of `stores.py`: job documents kept by plain Python with each server's standard
client (psycopg 3, redis-py, sqlite3), doing the work Geyser's store does: the document as
JSON beside indexed status / type / update-time columns (Redis: index entries changed with the
document in one Lua script), and compare-and-swap on its `version`. Used by `stores.py` and by
the plain drain worker `plain_drain.py`; touches only its own schema, key prefix or file.
"""

from __future__ import annotations

import json
from typing import Protocol

TABLE_SQL = """CREATE TABLE IF NOT EXISTS {t} (
    uuid text PRIMARY KEY, version bigint NOT NULL, status text NOT NULL,
    job_type text NOT NULL, updated_at double precision NOT NULL, doc {doc_type} NOT NULL);
CREATE INDEX IF NOT EXISTS {i}_status ON {t} (status, uuid);
CREATE INDEX IF NOT EXISTS {i}_type ON {t} (job_type, uuid);
CREATE INDEX IF NOT EXISTS {i}_updated ON {t} (status, updated_at)"""


class PlainStore(Protocol):
    def create(self, doc: dict) -> None: ...
    def get(self, uuid: str) -> str | bytes | None: ...
    def cas(self, doc: dict, expected: int) -> bool: ...
    def all_docs(self) -> list[dict]: ...
    def drop(self) -> None: ...


class PlainPostgres:
    """`bench` schema `schema` of the database at `dsn`, one table."""

    def __init__(self, dsn: str, schema: str) -> None:
        import psycopg

        self.schema = schema
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.t = f'"{schema}".documents'
        self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        for stmt in TABLE_SQL.format(t=self.t, i="documents", doc_type="jsonb").split(";\n"):
            self.conn.execute(stmt)
        self.insert_sql = (f"INSERT INTO {self.t} (uuid, version, status, job_type, updated_at, doc) "
                           "VALUES (%s, %s, %s, %s, %s, %s::jsonb)")
        self.get_sql = f"SELECT doc::text FROM {self.t} WHERE uuid = %s"
        self.cas_sql = (f"UPDATE {self.t} SET version = %s, status = %s, updated_at = %s, doc = %s::jsonb "
                        "WHERE uuid = %s AND version = %s")

    def create(self, doc: dict) -> None:
        self.conn.execute(self.insert_sql, (doc["uuid"], doc["version"], doc["status"], doc["jobType"],
                                            doc["updatedAt"], json.dumps(doc)), prepare=True)

    def get(self, uuid: str) -> str | None:
        row = self.conn.execute(self.get_sql, (uuid,), prepare=True).fetchone()
        return row[0] if row else None

    def cas(self, doc: dict, expected: int) -> bool:
        cur = self.conn.execute(self.cas_sql, (doc["version"], doc["status"], doc["updatedAt"], json.dumps(doc),
                                               doc["uuid"], expected), prepare=True)
        return cur.rowcount == 1

    def all_docs(self) -> list[dict]:
        return [json.loads(r[0]) for r in self.conn.execute(f"SELECT doc::text FROM {self.t}")]

    def drop(self) -> None:
        self.conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        self.conn.close()


# KEYS[1] the document; ARGV: prefix, uuid, json, status, updatedAt, jobType.
REDIS_CREATE = """
if redis.call('SET', KEYS[1], ARGV[3], 'NX') == false then return 0 end
redis.call('ZADD', ARGV[1] .. 'all', 0, ARGV[2])
redis.call('ZADD', ARGV[1] .. 'type:' .. ARGV[6], 0, ARGV[2])
redis.call('ZADD', ARGV[1] .. 'status:' .. ARGV[4], 0, ARGV[2])
redis.call('ZADD', ARGV[1] .. 'updated:' .. ARGV[4], ARGV[5], ARGV[2])
return 1
"""
# As create, then the version the writer read: swaps only if it is still stored.
REDIS_CAS = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local old = cjson.decode(raw)
if old.version ~= tonumber(ARGV[7]) then return 0 end
redis.call('SET', KEYS[1], ARGV[3])
if old.status ~= ARGV[4] then
  redis.call('ZREM', ARGV[1] .. 'status:' .. old.status, ARGV[2])
  redis.call('ZADD', ARGV[1] .. 'status:' .. ARGV[4], 0, ARGV[2])
  redis.call('ZREM', ARGV[1] .. 'updated:' .. old.status, ARGV[2])
end
redis.call('ZADD', ARGV[1] .. 'updated:' .. ARGV[4], ARGV[5], ARGV[2])
return 1
"""


class PlainRedis:
    """Keys under `prefix` in the db of `url`."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis

        self.prefix = prefix
        self.r = redis.Redis.from_url(url)
        self.create_script = self.r.register_script(REDIS_CREATE)
        self.cas_script = self.r.register_script(REDIS_CAS)

    def _args(self, doc: dict) -> tuple[list, list]:
        uuid = doc["uuid"]
        return [f"{self.prefix}doc:{uuid}"], [self.prefix, uuid, json.dumps(doc), doc["status"],
                                               repr(doc["updatedAt"]), doc["jobType"]]

    def create(self, doc: dict) -> None:
        keys, args = self._args(doc)
        if self.create_script(keys, args) != 1:
            raise RuntimeError(f"job {doc['uuid']} exists")

    def get(self, uuid: str) -> bytes | None:
        return self.r.get(f"{self.prefix}doc:{uuid}")

    def cas(self, doc: dict, expected: int) -> bool:
        keys, args = self._args(doc)
        return self.cas_script(keys, [*args, expected]) == 1

    def all_docs(self) -> list[dict]:
        keys = list(self.r.scan_iter(match=f"{self.prefix}doc:*", count=1000))
        return [json.loads(v) for v in self.r.mget(keys)] if keys else []

    def drop(self) -> None:
        keys = list(self.r.scan_iter(match=f"{self.prefix}*", count=1000))
        for i in range(0, len(keys), 1000):
            self.r.delete(*keys[i:i + 1000])
        self.r.close()


class PlainSqlite:
    """One table in the file `path`, in WAL mode with synchronous=NORMAL (as Geyser's store)."""

    def __init__(self, path: str) -> None:
        import sqlite3

        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(TABLE_SQL.format(t="documents", i="documents", doc_type="text") + ";")

    def create(self, doc: dict) -> None:
        self.conn.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                          (doc["uuid"], doc["version"], doc["status"], doc["jobType"], doc["updatedAt"],
                           json.dumps(doc)))

    def get(self, uuid: str) -> str | None:
        row = self.conn.execute("SELECT doc FROM documents WHERE uuid = ?", (uuid,)).fetchone()
        return row[0] if row else None

    def cas(self, doc: dict, expected: int) -> bool:
        cur = self.conn.execute(
            "UPDATE documents SET version = ?, status = ?, updated_at = ?, doc = ? WHERE uuid = ? AND version = ?",
            (doc["version"], doc["status"], doc["updatedAt"], json.dumps(doc), doc["uuid"], expected))
        return cur.rowcount == 1

    def all_docs(self) -> list[dict]:
        return [json.loads(r[0]) for r in self.conn.execute("SELECT doc FROM documents")]

    def drop(self) -> None:
        self.conn.close()


def open_plain(kind: str, where: str, namespace: str) -> PlainStore:
    """kind: postgres (where: a libpq URL), redis (where: a redis URL) or sqlite (where: a file)."""
    if kind == "postgres":
        return PlainPostgres(where, namespace)
    if kind == "redis":
        return PlainRedis(where, namespace)
    return PlainSqlite(where)


def plain_enqueue(store: PlainStore, queue: object, doc: dict) -> dict:
    """What Geyser's enqueue does, in plain Python: save the document at version 1, put its
    uuid on the queue (a greenstalk client), then note the queue id with a compare-and-swap."""
    doc = {**doc, "version": 1}
    store.create(doc)
    queue_id = queue.put(doc["uuid"].encode())  # type: ignore[attr-defined]
    noted = {**doc, "version": 2, "queueJobId": str(queue_id)}
    if not store.cas(noted, 1):
        raise RuntimeError(f"job {doc['uuid']} changed while it was enqueued")
    return noted
