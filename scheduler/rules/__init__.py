"""Pure rules: schedules and fire times, policies, field validation, redaction. No I/O."""
