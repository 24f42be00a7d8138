"""moto's server, with each DynamoDB request applied whole before the next.

moto runs every request on its own thread, and applies TransactWriteItems by
deep-copying each table it touches and, when a condition fails, putting that
copy back: a write another thread made in between, and its stream records,
are lost. DynamoDB isolates a transaction from every other write, and a
conditional write is checked and applied as one
(https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis.html#transaction-isolation).
Without this, two workers could both win one conditional save, and a gate
run twice, on the local stack only.

sluice-local's launcher writes it into the stack's state directory and runs
it with the Python of `.venv` (or SLUICE_MOTO_PYTHON): `moto_server.py -H HOST -p PORT`.
"""

import sys
import threading

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

sys.exit(main())
