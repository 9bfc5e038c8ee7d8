"""The operator web console (``systemprompt scheduler:web``): an adapter around :class:`SchedulerService`.

Starlette + Jinja2 pages and a JSON API under ``/api`` (docs/web.md). It reads and acts only through the
service (and so through ``scheduler.storage``); the core never imports it (checked by ``lint-imports``).
"""
