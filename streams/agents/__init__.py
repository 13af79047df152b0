"""Faust agents, one module per concern: key spaces, bookings, sinks, clock."""
