"""Faust agents, one module per concern: key spaces, bookings, timers, the worker's sinks."""
