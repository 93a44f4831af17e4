"""Executors adapt stages to an engine: Ray Data today (Spark for the same stages later)."""
