"""Commands: the registry of what a task may run, and the built-in commands."""
