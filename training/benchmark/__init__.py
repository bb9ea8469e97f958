"""Deterministic procedural benchmark of animal vocalisations (see `corpus`)."""
