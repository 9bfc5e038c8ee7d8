"""A short tour on the embedded default (`python -m cli.demo`): what `make run` runs until the engine exists.

Uses whatever database the settings name (no configuration: SQLite under ``./.scheduler``), creates the demo
task if it is absent, then shows the tasks and their next runs. A second run changes nothing.
"""

from __future__ import annotations

import sys

from cli.admin import mask_url
from cli.cells import Column
from cli.context import exit_code_for
from cli.render import console, print_table
from cli.tasks import TASK_COLUMNS

DEMO_TASK = {
    "name": "demo-echo",
    "command": "test:echo",
    "schedule": "*/5 * * * *",
    "data": {"message": "hello from the demo"},
}
TRY_NEXT = (
    "systemprompt scheduler:list",
    "systemprompt scheduler:validate --schedule '0 2 * * *' --timezone Europe/Berlin",
    "systemprompt scheduler:create --name health --command test:echo --schedule 5m",
    "systemprompt scheduler:pause --id demo-echo --reason 'just looking'",
    "systemprompt scheduler:audit",
)


def tour() -> int:
    from scheduler.errors import TaskNotFound
    from scheduler.service import SchedulerService
    from scheduler.settings import load_settings

    out = console()
    settings = load_settings().settings
    out.print("[bold]systemprompt-scheduler: a short tour[/bold]")
    out.print(f"database: {mask_url(settings.effective_database_url)}", markup=False)
    service = SchedulerService.from_settings(settings, actor="demo")
    try:
        try:
            task = service.get_task(str(DEMO_TASK["name"]))
            out.print(f"1. the demo task exists already: {task.name} (id {task.id})", markup=False)
        except TaskNotFound:
            task = service.create_task(DEMO_TASK)
            out.print(f"1. created the demo task: {task.name} (id {task.id})", markup=False)
        out.print("2. every task:")
        print_table(service.list_tasks(), TASK_COLUMNS)
        out.print(f"3. the next runs of {task.name}:", markup=False)
        runs = service.next_runs(task=task.id, count=5)
        if runs:
            print_table(runs, (Column("at"), Column("task_name", "task")))
        else:
            out.print(f"   none: the task is {task.status}", markup=False)
    finally:
        service.engine.dispose()
    out.print("Try next:")
    for line in TRY_NEXT:
        out.print(f"  {line}", markup=False, highlight=False)
    return 0


def main() -> None:
    sys.exit(exit_code_for(tour))


if __name__ == "__main__":
    main()
