"""Bridges that bring readings from other transports onto Faultline's bus."""
