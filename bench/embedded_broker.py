"""Candidates for the embedded broker, measured the same way: kombu's filesystem transport as it ships, ours
(``workers.filesystem_transport``: staged write + rename, bad files moved aside) and kombu's SQLAlchemy
transport on a SQLite file of its own.

Per candidate, in a fresh temp directory:

- publish: ``--n`` messages of a Celery message's size (~1.5 KB body) through one producer, messages/s;
- consume: that backlog drained by one consumer (take + ack), messages/s;
- concurrent: ``--publishers`` processes publish ``--n`` messages in all while one consumer takes them as fast
  as it can; counts messages received, duplicates, and errors the consumer's ``get`` raised (a torn read is a
  ``JSONDecodeError``, which stops a Celery worker);
- fanout: a message published to a fanout exchange in one process reaches a queue bound in another (what
  Celery's remote control, ``celery inspect ping`` and Flower need).

Run: ``.venv/bin/python -m bench.embedded_broker [--n 2000] [--publishers 4] [--runs 3]``; prints a table
(medians of ``--runs``). The figures and the decision are in docs/operations.md ("The embedded broker").
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections import Counter
from pathlib import Path
from queue import Empty
from typing import Any

from kombu import Connection, Exchange, Producer, Queue

from bench._common import median, suffix
from workers.embedded import EMBEDDED_TRANSPORT, broker_folders, transport_options

BODY = {"filler": "x" * 1500}
CANDIDATES = ("kombu filesystem", "atomic filesystem (ours)", "kombu sqla+sqlite")


def connect(candidate: str, home: Path) -> Any:
    if candidate == "kombu filesystem":
        options = transport_options(home)
        folders = broker_folders(home)
        options = {key: options[key] for key in ("data_folder_in", "data_folder_out", "control_folder")}
        options |= {"store_processed": True, "processed_folder": str(folders.processed)}
        return Connection("filesystem://localhost/", transport_options=options)
    if candidate == "atomic filesystem (ours)":
        return Connection(
            "filesystem://localhost/", transport=EMBEDDED_TRANSPORT, transport_options=transport_options(home)
        )
    return Connection(f"sqla+sqlite:///{home / 'broker.db'}")


def publish(candidate: str, home: Path, name: str, tag: str, count: int) -> None:
    with connect(candidate, home) as connection:
        queue = connection.SimpleQueue(name)
        for n in range(count):
            queue.put({"id": f"{tag}-{n}", **BODY}, serializer="json")
        queue.close()


def publish_and_consume(candidate: str, n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder, connect(candidate, Path(folder)) as connection:
        queue = connection.SimpleQueue(f"bench-{suffix()}")
        start = time.perf_counter()
        for i in range(n):
            queue.put({"id": i, **BODY}, serializer="json")
        published = time.perf_counter()
        for _ in range(n):
            queue.get(timeout=5).ack()
        consumed = time.perf_counter()
        queue.close()
    return n / (published - start), n / (consumed - published)


def concurrent(candidate: str, n: int, publishers: int) -> dict[str, int]:
    per = n // publishers
    received: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as folder, connect(candidate, Path(folder)) as connection:
        home, name = Path(folder), f"bench-{suffix()}"
        queue = connection.SimpleQueue(name)
        context = multiprocessing.get_context("spawn")
        processes = [
            context.Process(target=publish, args=(candidate, home, name, str(p), per))
            for p in range(publishers)
        ]
        for process in processes:
            process.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                message = queue.get_nowait()
            except Empty:
                if not any(p.is_alive() for p in processes) and not queue.qsize():
                    break
                continue
            except Exception as error:  # what would reach Celery's consumer
                errors[type(error).__name__] += 1
                continue
            received[message.payload["id"]] += 1
            message.ack()
        for process in processes:
            process.join(30)
        queue.close()
    return {
        "received": len(received),
        "expected": per * publishers,
        "duplicates": sum(c - 1 for c in received.values()),
        "errors": sum(errors.values()),
    }


def _fanout_listener(candidate: str, home: str, ready: Any, got: Any) -> None:
    exchange = Exchange("bench-fanout", type="fanout")
    with connect(candidate, Path(home)) as connection:
        queue = Queue("bench-fanout-listener", exchange)(connection.channel())
        queue.declare()
        ready.set()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            message = queue.get(no_ack=True)
            if message is not None:
                got.set()
                return
            time.sleep(0.05)


def fanout(candidate: str) -> bool:
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        ready, got = context.Event(), context.Event()
        listener = context.Process(target=_fanout_listener, args=(candidate, folder, ready, got))
        listener.start()
        ready.wait(30)
        with connect(candidate, Path(folder)) as connection:
            exchange = Exchange("bench-fanout", type="fanout")
            Producer(connection.channel()).publish({"ping": 1}, exchange=exchange, declare=[exchange])
        listener.join(30)
        return got.is_set()


# Each run uses queue names of its own: kombu's filesystem transport keeps the bindings of every folder a
# process used in one in-memory state and would not bind the same queue name in a second folder.


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"n = {args.n}, {args.publishers} concurrent publishers, medians of {args.runs} runs")
    print(
        "| candidate | publish msg/s | consume msg/s | concurrent: received/expected, duplicates, errors |",
        end="",
    )
    print(" fanout |")
    print("|---|---|---|---|---|")
    rates: dict[str, list[tuple[float, float]]] = {candidate: [] for candidate in CANDIDATES}
    runs: dict[str, list[dict[str, int]]] = {candidate: [] for candidate in CANDIDATES}
    for _ in range(args.runs):  # candidates alternate, so a noisy moment of the machine hits them all
        for candidate in CANDIDATES:
            rates[candidate].append(publish_and_consume(candidate, args.n))
            runs[candidate].append(concurrent(candidate, args.n, args.publishers))
    for candidate in CANDIDATES:
        publish_rate = median([rate[0] for rate in rates[candidate]])
        consume_rate = median([rate[1] for rate in rates[candidate]])
        torn = "; ".join(
            f"{r['received']}/{r['expected']}, {r['duplicates']}, {r['errors']}" for r in runs[candidate]
        )
        print(
            f"| {candidate} | {publish_rate:.0f} | {consume_rate:.0f} | {torn} "
            f"| {'yes' if fanout(candidate) else 'no'} |"
        )


if __name__ == "__main__":
    main()
