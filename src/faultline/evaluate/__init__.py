"""Measuring detection quality: replay labelled data through detectors and score it."""
