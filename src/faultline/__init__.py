"""Faultline: real-time anomaly detection for industrial IoT sensor streams."""

__version__ = "0.1.0"
