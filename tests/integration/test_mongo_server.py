"""The MongoDB-wire server by _id: index use, bulks larger than its pool, guarded upserts.

FerretDB 1.24 as published fails each of these (launcher/go/ferretdb/patches fix them): every
operation by _id scans the collection, an update command with as many statements as the backend
pool has connections never returns, and a failed statement ends the whole command with a reply
pymongo cannot read. The same tests pass against MongoDB itself (MIS_TEST_BACKEND=containers).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import pytest
from pymongo import MongoClient, ReplaceOne
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError

from streams.config import Settings

# More statements than either FerretDB backend's pool has connections (SQLite 100, PostgreSQL 50).
BULK = 120
# A bulk that waits on the pool never answers: the socket timeout turns that into a failure.
BULK_DEADLINE_MS = 120_000


@pytest.fixture
def collection(mongo_db: Database) -> Iterator[Collection]:
    coll = mongo_db[f"it_mongo_server_{uuid4().hex[:8]}"]
    coll.insert_one({"_id": "probe"})
    yield coll
    coll.drop()


def _plan(db: Database, coll: Collection, query: dict[str, Any]) -> str:
    explained = db.command(
        "explain", {"find": coll.name, "filter": query}, verbosity="queryPlanner"
    )
    return json.dumps(explained.get("queryPlanner"), default=str)


def _served_by_id_index(plan: str) -> bool:
    # FerretDB on SQLite: EXPLAIN QUERY PLAN lines ("SEARCH t USING INDEX t__id_ (<expr>=?)" or
    # "SCAN t"); FerretDB on PostgreSQL: EXPLAIN's JSON ("Index Scan" / "Seq Scan"); MongoDB:
    # IDHACK / EXPRESS_IXSCAN / IXSCAN on _id_ (COLLSCAN otherwise).
    scans = ("detail=SCAN", "Seq Scan", "COLLSCAN")
    indexed = ("USING INDEX", "Index Scan", "IDHACK", "EXPRESS_IXSCAN", "IXSCAN")
    return not any(s in plan for s in scans) and any(s in plan for s in indexed)


@pytest.mark.parametrize(
    "query",
    [
        {"_id": "listing-7"},
        # A guarded write's filter: the _id equality is still what finds the document.
        {"_id": "listing-7", "source_version": {"$lt": "00000000000000000000000000000009"}},
    ],
    ids=["bare-id", "guarded"],
)
def test_a_query_by_id_is_served_by_the_id_index(
    mongo_db: Database, collection: Collection, query: dict[str, Any]
) -> None:
    collection.insert_many(
        [{"_id": f"listing-{i}", "source_version": f"{i:032d}"} for i in range(50)]
    )
    plan = _plan(mongo_db, collection, query)
    assert _served_by_id_index(plan), plan
    assert collection.find_one(query) == {"_id": "listing-7", "source_version": f"{7:032d}"}


def test_a_bulk_of_more_replaces_than_the_pool_has_connections_returns(
    settings: Settings, collection: Collection
) -> None:
    collection.insert_many([{"_id": f"l-{i}", "v": 0} for i in range(BULK)])
    with MongoClient(
        settings.mongo_url, serverSelectionTimeoutMS=5000, socketTimeoutMS=BULK_DEADLINE_MS
    ) as client:
        coll = client[collection.database.name][collection.name]
        result = coll.bulk_write(
            [
                ReplaceOne({"_id": f"l-{i}"}, {"_id": f"l-{i}", "v": 1}, upsert=True)
                for i in range(BULK)
            ],
            ordered=True,
        )
        assert (result.matched_count, result.modified_count, result.upserted_count) == (
            BULK,
            BULK,
            0,
        )
        # The server is still usable afterwards, and every replace landed.
        assert coll.count_documents({"v": 1}) == BULK


def _guarded(key: str, version: int) -> ReplaceOne:
    return ReplaceOne(
        {"_id": key, "version": {"$lt": version}}, {"_id": key, "version": version}, upsert=True
    )


def _versions(coll: Collection) -> dict[str, int]:
    return {d["_id"]: d["version"] for d in coll.find({"_id": {"$ne": "probe"}})}


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
def test_a_stale_guarded_upsert_is_a_duplicate_key_write_error_at_its_index(
    collection: Collection, ordered: bool
) -> None:
    collection.insert_many([{"_id": k, "version": 5} for k in ("a", "b", "c")])
    ops = [_guarded("a", 9), _guarded("b", 3), _guarded("c", 9), _guarded("new", 1)]
    with pytest.raises(BulkWriteError) as caught:
        collection.bulk_write(ops, ordered=ordered)
    details = caught.value.details
    assert [(e["index"], e["code"]) for e in details["writeErrors"]] == [(1, 11000)]
    if ordered:
        # Stops at the stale statement: what came before it is written, nothing after it.
        assert (details["nMatched"], details["nUpserted"]) == (1, 0)
        assert _versions(collection) == {"a": 9, "b": 5, "c": 5}
    else:
        # Every other statement still runs; the upsert is reported at its own index.
        assert (details["nMatched"], details["nUpserted"]) == (2, 1)
        assert details["upserted"] == [{"index": 3, "_id": "new"}]
        assert _versions(collection) == {"a": 9, "b": 5, "c": 9, "new": 1}
