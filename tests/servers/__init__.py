"""Helpers that start and stop the real test servers on 127.0.0.1."""
