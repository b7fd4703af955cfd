"""Customer state for the online service and the `nextbest store` commands (DESIGN.md §4a).

Open a store by URI:

- `sqlite:///PATH`: the embedded default, one file shared by every process on one machine
  (`nextbest.store.sqlite`);
- `redis://HOST:PORT/DB`: shared by every worker and machine (`nextbest.store.redis`; needs the
  `store` extra, `pip install 'nextbest[store]'`);
- `redis+cluster://HOST:PORT`: the same on a Redis Cluster, named by any of its nodes (the client finds
  the others). Each customer is one hash slot, so each step on a customer runs on one node.

`rediss://` and `rediss+cluster://` are the same over TLS.

```python
with open_store("sqlite:///state.db") as store:
    store.append_events([{"customer_id": "c1", "timestamp": "2026-11-19T08:00Z", "event_type": "visit"}])
    served = store.serve("c1", now, "d-1", [Candidate("email_offer", 0.9)], catalog)
```
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from nextbest.store.base import (
    DEFAULT_MAX_EVENTS,
    AppendResult,
    CustomerRecord,
    CustomerStore,
    Erased,
    Histories,
    Retention,
    StoreError,
    StoreUnavailableError,
    UpsertResult,
)
from nextbest.store.contacts import Candidate, Contact, Decision, Served, UnknownActionError
from nextbest.store.rows import Rejection, event_keys

SCHEMES = ("sqlite", "redis", "rediss", "redis+cluster", "rediss+cluster")

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "SCHEMES",
    "AppendResult",
    "Candidate",
    "Contact",
    "CustomerRecord",
    "CustomerStore",
    "Decision",
    "Erased",
    "Histories",
    "Rejection",
    "Retention",
    "Served",
    "StoreError",
    "StoreUnavailableError",
    "UnknownActionError",
    "UpsertResult",
    "event_keys",
    "open_store",
]


def open_store(
    uri: str, *, max_events: int = DEFAULT_MAX_EVENTS, ttl_days: float | None = None
) -> CustomerStore:
    """The store at `uri`, created when absent, keeping the last `max_events` events per customer (and,
    with `ttl_days`, none older).

    Raises:
        StoreError: the URI is not a store's, or the store cannot be opened or reached; the message
            names the URI.
    """
    retention = Retention(max_events, ttl_days)
    scheme = urlsplit(uri).scheme
    if scheme == "sqlite":
        from nextbest.store.sqlite import SQLiteStore

        return SQLiteStore(_sqlite_path(uri), uri, retention)
    if scheme in SCHEMES[1:]:
        from nextbest.store.redis import RedisStore

        return RedisStore(uri, retention)
    raise StoreError(
        f"unknown store URI {uri!r}: expected sqlite:///PATH, redis://HOST:PORT/DB or "
        "redis+cluster://HOST:PORT"
    )


def _sqlite_path(uri: str) -> Path:
    """The file of `sqlite:///PATH` (relative to the working directory) or `sqlite:////ABSOLUTE`, as
    SQLAlchemy and MLflow read such URIs."""
    path = uri.removeprefix("sqlite:///")
    if path == uri or not path or urlsplit(uri).netloc:
        raise StoreError(f"invalid SQLite store URI {uri!r}: expected sqlite:///PATH")
    return Path(path)
