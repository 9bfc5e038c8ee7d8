"""systemprompt-scheduler: the core (settings, schedules, storage, service, planner); no Celery import."""
