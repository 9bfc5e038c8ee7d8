"""systemprompt-scheduler: the core (settings, schedules, storage, service, planner); importable without Celery."""
