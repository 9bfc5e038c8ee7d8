"""A planner process for the fault tests, for what ``systemprompt scheduler:planner`` does not offer.

``python planner_runner.py --holder NAME [--no-lease]``: the real :class:`scheduler.planning.planner.Planner`
loop with the real Celery publisher, configured from the ``SCHEDULER_*`` environment like the CLI's;
``--no-lease`` plans without leadership (invariant 2 alone keeps slots single). SIGTERM or SIGINT stops it
cleanly.
"""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType

from scheduler.observability.log_setup import configure_logging
from scheduler.planning.planner import Planner
from scheduler.settings import load_settings
from scheduler.storage.db import engine_from_settings
from workers.app import create_app
from workers.publisher import CeleryPublisher


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--holder", required=True)
    parser.add_argument("--no-lease", action="store_true")
    args = parser.parse_args()
    settings = load_settings().settings
    configure_logging(settings)
    engine = engine_from_settings(settings)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    planner = Planner(
        engine,
        settings,
        CeleryPublisher(create_app(settings)),
        holder=args.holder,
        require_lease=not args.no_lease,
    )
    print(f"planner {args.holder} started (lease {'off' if args.no_lease else 'on'})", flush=True)
    planner.run_forever(stop)
    engine.dispose()


if __name__ == "__main__":
    main()
