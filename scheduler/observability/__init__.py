"""Observability: events, logging, metrics and health checks."""
