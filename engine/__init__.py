"""tokenmill.engine: the runtime (schema, Stage protocol, config, readers/writers, executors, report)."""
