"""systemprompt-scheduler workers: the adapters that plug Celery, kombu and Redis into the core's ports.

The composition root (:mod:`workers.wiring`), the Celery app and its one task, the publisher, events on Redis,
the health probes, the embedded broker and ``scheduler:serve``. Importing this package imports nothing heavy;
the Celery app module does.
"""
