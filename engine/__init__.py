"""tokenmill.engine: the runtime (the Stage contract, config, plan, run loop, io, durability, report,
executors). ``__version__`` is the one version string: pyproject.toml reads it from here."""

__version__ = "0.1.0"
