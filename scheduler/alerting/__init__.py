"""Alerts (docs/alerts.md): the leading planner evaluates the rules (:mod:`.evaluator`), keeps incidents in
the database and sends their messages through the delivery outbox (:mod:`.outbox`) to the channels' senders, a
port (:mod:`.port`) whose HTTP and SMTP adapters live in ``workers/alert_channels.py``."""
