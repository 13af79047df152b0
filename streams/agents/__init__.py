"""Faust agents, one module per concern: route, key spaces, bookings, sink, clock."""
