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

moto's CodePipeline is kinder than AWS's too: an execution has succeeded the
moment it starts, a start ignores its `clientRequestToken` (each repeat starts
another execution), and StopPipelineExecution is not there. CodePipeline
(https://docs.aws.amazon.com/codepipeline/latest/APIReference/API_StartPipelineExecution.html,
.../API_StopPipelineExecution.html) runs an execution `InProgress` through
its stages, returns the same execution for the same token, and stops one on
request (`Stopping`, then `Stopped`): with `abandon`, in a moment; without,
once the actions in progress finish. Here each stage takes
CODEPIPELINE_STAGE_SECONDS, multiplied by the stack's schedule scale
(SLUICE_SCHEDULE_SCALE), like every other time of the local stack.

moto's CloudWatch has no percentiles: a `pNN.NN` statistic comes back as
nothing. CloudWatch computes them from the raw values of a period, and from
a statistic set only when its SampleCount is 1 or its Minimum equals its
Maximum; with no such value in a period, there is no datapoint
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricStatistics.html).
Here percentiles are computed that way (nearest rank), and a period without
one gives no datapoint, as on AWS.

moto's server is also slower than it need be, which under load is a local
stack harsher than AWS (every service's requests queue on one Python
process), so three costs that change no answer are cut: the dispatcher lists
moto's package directory and tries every service's URL patterns for each
request (the answer for a host is kept); each request is logged to moto.log;
and SQS's ReceiveMessage builds all of a queue's attributes, counting its
messages, for each message it looks at (only the retention period is read).

sluice-local's launcher writes this file into the stack's state directory and
runs it with the Python of `.venv` (or SLUICE_MOTO_PYTHON):
`moto_server.py -H HOST -p PORT`.
"""

import copy
import json
import logging
import math
import os
import re
import sys
import threading
import time

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table
from moto.dynamodb.responses import DynamoHandler
from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
from moto.cloudwatch.models import CloudWatchBackend, Statistics
from moto.codepipeline.models import CodePipelineBackend, PipelineExecution
from moto.codepipeline.responses import CodePipelineResponse
from moto.core.exceptions import JsonRESTError
from moto.core.utils import unix_time
from moto.moto_server.werkzeug_app import DomainDispatcherApplication
from moto.server import main
from moto.sqs.models import SQSBackend

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


CODEPIPELINE_STAGE_SECONDS = 30.0
_stage_seconds = CODEPIPELINE_STAGE_SECONDS * float(
    os.environ.get("SLUICE_SCHEDULE_SCALE", "1")
)
_abandon_seconds = 1.0 * float(os.environ.get("SLUICE_SCHEDULE_SCALE", "1"))
_ENDED = ("Succeeded", "Stopped", "Failed", "Cancelled", "Superseded")
_new_execution = PipelineExecution.__init__
_executions_by_token = {}
_codepipeline_lock = threading.Lock()


def _execution_started(self, pipeline_name, pipeline_version, variables):
    _new_execution(self, pipeline_name, pipeline_version, variables)
    self.status = "InProgress"
    self.started = time.monotonic()
    self.stages = 1
    self.stopped_at = None
    self.abandoned = False


def _refresh(execution):
    """Moves an execution on by the time it has run."""
    if execution.status in _ENDED:
        return
    elapsed = time.monotonic() - execution.started
    if execution.status == "Stopping":
        if elapsed >= execution.stopped_at:
            execution.status = "Stopped"
    elif elapsed >= execution.stages * _stage_seconds:
        execution.status = "Succeeded"


def _refreshed(to_dict):
    def answer(self):
        with _codepipeline_lock:
            _refresh(self)
        return to_dict(self)

    return answer


PipelineExecution.__init__ = _execution_started
PipelineExecution.to_dict = _refreshed(PipelineExecution.to_dict)
PipelineExecution.to_summary_dict = _refreshed(PipelineExecution.to_summary_dict)

_start_pipeline_execution = CodePipelineBackend.start_pipeline_execution


def _start(self, name, variables):
    execution_id = _start_pipeline_execution(self, name, variables)
    pipeline = self.pipelines[name]
    pipeline.executions[execution_id].stages = max(
        1, len(pipeline.pipeline.get("stages", []))
    )
    return execution_id


CodePipelineBackend.start_pipeline_execution = _start

_start_response = CodePipelineResponse.start_pipeline_execution


def _start_once_per_token(self):
    token = self._get_param("clientRequestToken")
    key = (self.current_account, self.region, self._get_param("name"), token)
    with _codepipeline_lock:
        known = _executions_by_token.get(key) if token else None
        pipeline = self.codepipeline_backend.pipelines.get(self._get_param("name"))
        # A token outlives neither its execution nor a reset of the state.
        if known and pipeline is not None and known in pipeline.executions:
            return json.dumps({"pipelineExecutionId": known})
        answer = _start_response(self)
        if token:
            _executions_by_token[key] = json.loads(answer)["pipelineExecutionId"]
        return answer


def _stop_pipeline_execution(self):
    name = self._get_param("pipelineName")
    execution_id = self._get_param("pipelineExecutionId")
    abandon = bool(self._get_param("abandon", False))
    execution = self.codepipeline_backend.get_pipeline_execution(name, execution_id)
    with _codepipeline_lock:
        _refresh(execution)
        # A stop and wait may be followed by a stop and abandon, nothing else.
        if execution.status == "Stopping" and (execution.abandoned or not abandon):
            raise JsonRESTError(
                "DuplicatedStopRequestException",
                f"Execution {execution_id} is already in a Stopping state",
            )
        if execution.status not in ("InProgress", "Stopping"):
            raise JsonRESTError(
                "PipelineExecutionNotStoppableException",
                f"Unable to stop execution {execution_id}: it is {execution.status}",
            )
        elapsed = time.monotonic() - execution.started
        if abandon:
            # The actions in progress are abandoned: a moment, not a stage.
            execution.abandoned = True
            execution.stopped_at = elapsed + _abandon_seconds
        else:
            # The actions in progress finish: the current stage ends.
            execution.stopped_at = (int(elapsed // _stage_seconds) + 1) * _stage_seconds
        execution.status = "Stopping"
        execution.status_summary = self._get_param("reason")
    return json.dumps({"pipelineExecutionId": execution_id})


_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d{1,2})?|100)$")
_moto_statistic = Statistics.get_statistics_for_type


def _statistic(self, stat):
    match = _PERCENTILE.match(stat)
    if not match:
        return _moto_statistic(self, stat)
    values = list(self.metric_single_values_list)
    for aggregated in self.metric_aggregated_list:
        if aggregated.sample_count == 1 or aggregated.min == aggregated.max:
            values += [aggregated.max] * int(aggregated.sample_count)
    if not values or min(values) < 0:
        return None
    values.sort()
    rank = math.ceil(float(match.group(1)) / 100 * len(values))
    return values[max(rank, 1) - 1]


_moto_get_metric_data = CloudWatchBackend.get_metric_data


def _get_metric_data(self, *args, **kwargs):
    results = _moto_get_metric_data(self, *args, **kwargs)
    for result in results:
        kept = [(v, t) for v, t in zip(result["values"], result["timestamps"]) if v is not None]
        result["values"] = [v for v, _ in kept]
        result["timestamps"] = [t for _, t in kept]
    return results


Statistics.get_statistics_for_type = _statistic
CloudWatchBackend.get_metric_data = _get_metric_data
CodePipelineResponse.start_pipeline_execution = _start_once_per_token
CodePipelineResponse.stop_pipeline_execution = _stop_pipeline_execution

_backend_for_host = DomainDispatcherApplication.get_backend_for_host
_backends_by_host = {}


def _kept_backend_for_host(self, host):
    # Called under the dispatcher's lock; a host's backend never changes.
    if host not in _backends_by_host:
        _backends_by_host[host] = _backend_for_host(self, host)
    return _backends_by_host[host]


DomainDispatcherApplication.get_backend_for_host = _kept_backend_for_host


def _within_retention(self, queue_name, message):
    period = int(self.get_queue(queue_name).message_retention_period)
    return period + message.sent_timestamp / 1000 > unix_time()


SQSBackend.is_message_valid_based_on_retention_period = _within_retention

# werkzeug logs each request at INFO; its warnings and errors still show.
logging.getLogger("werkzeug").setLevel(logging.WARNING)

sys.exit(main())
