"""Batch analytics over what the stream stored: 1-minute aggregates and daily global anomalies."""
