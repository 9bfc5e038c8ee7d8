"""Pure rules: schedules and fire times, policies, field validation. No I/O."""
