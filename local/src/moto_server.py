"""moto's server, with DynamoDB's writes isolated as DynamoDB isolates them.

DynamoDB checks and applies a conditional write as one, isolates a
transaction from every other request, and a transaction it cancels changes
nothing, its table's stream included
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-isolation).
moto, as the local stack runs it, falls short in two ways:

- It runs every request on its own thread, and applies TransactWriteItems by
  deep-copying each table it touches and, when a condition fails, putting
  that copy back: a write another thread made in between is lost (two
  workers could both win one conditional save, and a gate run twice).
- The copy put back is a new table with a new stream shard, while stream
  readers go on following iterators of the old one: after the first refused
  transaction, they see no new record. Copying the whole table also costs
  time in proportion to its size, on every transaction.

So here DynamoDB's requests are taken one at a time, and a transaction keeps
its tables in place: it saves the items it names and the length of their
streams, and on failure puts those items back and drops the stream records
it added.

sluice-local's launcher writes this file into the stack's state directory and
runs it with the Python of `.venv` (or SLUICE_MOTO_PYTHON):
`moto_server.py -H HOST -p PORT`.
"""

import copy
import sys
import threading

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.server import main

_one_at_a_time = threading.Lock()


def _serialised(call_action):
    def call(self):
        with _one_at_a_time:
            return call_action(self)

    return call


# Streams read the tables' shards: not while a write is half applied.
for handler in (DynamoHandler, DynamoDBStreamsHandler):
    handler.call_action = _serialised(handler.call_action)


class _TablesKeptInPlace:
    """`copy` as moto's DynamoDB backend module sees it: a table "copied" for
    a transaction's rollback is the table itself (see `_transact`)."""

    @staticmethod
    def deepcopy(value, memo=None):
        if isinstance(value, Table):
            return value
        return copy.deepcopy(value, memo)


dynamodb_models.copy = _TablesKeptInPlace

_transact_write_items = DynamoDBBackend.transact_write_items


def _key_of(table, attributes, name):
    value = attributes.get(name) if name else None
    return DynamoType(value) if value is not None else None


def _transact(self, transact_items):
    saved = []
    stream_lengths = {}
    for entry in transact_items:
        if not isinstance(entry, dict) or len(entry) != 1:
            continue
        op = next(iter(entry.values()))
        table = self.tables.get(op.get("TableName"))
        if table is None:
            continue
        attributes = op.get("Key") or op.get("Item") or {}
        hash_key = _key_of(table, attributes, table.hash_key_attr)
        range_key = _key_of(table, attributes, table.range_key_attr)
        if hash_key is None or (table.has_range_key and range_key is None):
            continue
        before = table.get_item(hash_key, range_key)
        saved.append((table, hash_key, range_key, copy.deepcopy(before)))
        shard = table.stream_shard
        if shard is not None:
            stream_lengths.setdefault(id(shard), (shard, len(shard.items)))
    try:
        return _transact_write_items(self, transact_items)
    except Exception:
        for table, hash_key, range_key, before in reversed(saved):
            if table.has_range_key:
                if before is None:
                    table.items.get(hash_key, {}).pop(range_key, None)
                else:
                    table.items[hash_key][range_key] = before
            elif before is None:
                table.items.pop(hash_key, None)
            else:
                table.items[hash_key] = before
        for shard, length in stream_lengths.values():
            del shard.items[length:]
        raise


DynamoDBBackend.transact_write_items = _transact

sys.exit(main())
