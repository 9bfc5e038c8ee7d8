"""Example commands for systemprompt-scheduler; they live in :mod:`backup_commands.commands`."""
