"""The ``systemprompt`` command line: thin click verbs over :class:`scheduler.service.SchedulerService`.

Modules: ``main`` (the root group and the two spellings of every verb), ``verbs`` (which module defines
each verb: imported when the verb runs), ``context`` (error policy, service),
``options`` (parsing), ``render`` (tables and JSON), ``tasks`` / ``reports`` / ``admin`` (the verbs),
``engine`` (planner, worker, run, serve, cleanup, events), ``demo`` (``python -m cli.demo``).
"""
