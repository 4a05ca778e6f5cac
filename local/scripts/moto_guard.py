#!/usr/bin/env python3
"""Run a moto server (SQS, DynamoDB, ...) on 127.0.0.1 for as long as a watched process lives.

Usage: moto_guard.py PORT WATCH_PID

PORT 0 lets the kernel pick a free loopback port. Once the server listens, the guard prints
one line `MOTO_PORT=<port>` on stdout. It then polls once every 0.2 s and stops moto and exits
as soon as WATCH_PID is gone (or a zombie), its own parent changes (the parent died), or it gets
SIGTERM/SIGINT. The test process passes its own pid, so nothing is left running after tests.
"""

import logging
import os
import signal
import sys
import time


def watched_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            # pid (comm) state ...: the state follows the last ')'.
            state = f.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def serialize_dynamodb() -> None:
    """Makes moto's DynamoDB requests atomic with respect to each other, as DynamoDB is.

    moto serves requests on threads and its TransactWriteItems rolls back a cancelled
    transaction by restoring a deep copy of the whole table taken when the transaction
    started, which silently undoes writes that other requests made in between (lost budget
    increments, half-restored items). Real DynamoDB has no such effect. One lock around every
    DynamoDB action restores per-request atomicity; SQS (long polling) stays concurrent.
    """
    import threading

    from moto.dynamodb.responses import DynamoHandler

    lock = threading.Lock()
    original = DynamoHandler.call_action

    def call_action(self):
        with lock:
            return original(self)

    DynamoHandler.call_action = call_action
    cheap_transaction_rollback()


def serialize_sqs() -> None:
    """Makes moto's SQS requests atomic with respect to each other, as each SQS call is.

    moto's SQS models are not thread-safe: concurrent ReceiveMessage calls can hand the same
    message to two receivers, count its receives twice, or move it to the dead-letter queue
    twice (`list.remove(x): x not in list`, seen under the reliability suite's 8 pollers). A
    long poll (WaitTimeSeconds > 0) stays outside the lock so it cannot hold up other calls.
    """
    import threading

    from moto.sqs.responses import SQSResponse

    lock = threading.Lock()
    original = SQSResponse.call_action

    def call_action(self):
        try:
            wait = int(self._get_param("WaitTimeSeconds") or 0)
        except Exception:  # noqa: BLE001 - an unreadable parameter is moto's to report
            wait = 0
        if wait > 0:
            return original(self)
        with lock:
            return original(self)

    SQSResponse.call_action = call_action


def cheap_transaction_rollback() -> None:
    """Rolls back a cancelled TransactWriteItems item by item instead of table by table.

    moto deep-copies every table a transaction touches before running it, so each
    transaction costs time and memory in proportion to the table size (minutes and GBs once a
    ledger holds a few thousand items). Under the lock above only the transaction's own items
    can change, so saving and restoring those items is exact.
    """
    import copy

    from moto.dynamodb import models

    backend_class = models.DynamoDBBackend
    original = backend_class.transact_write_items

    class NoTableCopy:
        """Stands in for the `copy` module inside moto's transact_write_items."""

        def __getattr__(self, name):
            return getattr(copy, name)

        @staticmethod
        def deepcopy(value, memo=None):
            if isinstance(value, models.Table):
                return value
            return copy.deepcopy(value, memo)

    def item_key(backend, op):
        table = backend.get_table(op["TableName"])
        if "Key" in op:
            return op["Key"]
        attrs = op["Item"]
        key = {table.hash_key_attr: attrs[table.hash_key_attr]}
        if table.range_key_attr is not None:
            key[table.range_key_attr] = attrs[table.range_key_attr]
        return key

    def transact_write_items(self, transact_items):
        saved = []
        for entry in transact_items:
            for op in entry.values():
                try:
                    key = item_key(self, op)
                    current = self.get_item(op["TableName"], key)
                except Exception:  # validation errors surface from the original below
                    continue
                attrs = copy.deepcopy(current.to_json()["Attributes"]) if current else None
                saved.append((op["TableName"], key, attrs))
        models.copy = NoTableCopy()
        try:
            return original(self, transact_items)
        except Exception:
            for table_name, key, attrs in reversed(saved):
                table = self.get_table(table_name)
                if attrs is None:
                    if self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                else:
                    table.put_item(attrs)
            raise
        finally:
            models.copy = copy

    backend_class.transact_write_items = transact_write_items


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    port = int(sys.argv[1])
    watch_pid = int(sys.argv[2])
    parent = os.getppid()

    stop = False

    def on_signal(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # One log line per request on stderr is noise in test output; keep warnings and errors.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    serialize_dynamodb()
    serialize_sqs()

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    _, bound = server.get_host_and_port()
    print(f"MOTO_PORT={bound}", flush=True)
    # Nobody reads stdout after the port line: send anything later to /dev/null, not a closed pipe.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)

    try:
        while not stop and os.getppid() == parent and watched_alive(watch_pid):
            time.sleep(0.2)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
