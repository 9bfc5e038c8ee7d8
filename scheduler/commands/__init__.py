"""Commands: the registry of what a task may run, and the built-in commands.

What a command module needs: ``from scheduler.commands import command, CommandContext``.
"""

from scheduler.commands.registry import CommandContext, command

__all__ = ["CommandContext", "command"]
