"""Planning: the leader's loop that turns due slots into executions and hands them to a broker."""
