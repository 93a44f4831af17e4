"""The executor interface in one process: pyarrow and a thread pool, no Ray and no JVM."""
