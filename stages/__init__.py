"""tokenmill.stages: the operators. Importing this package registers every built-in stage type."""
from . import langid, length_filter  # noqa: F401
from .cleanup import decontaminate, pii, repair, url  # noqa: F401
from .dedup import exact, minhash  # noqa: F401
from .dedup import url as _url_dedup  # noqa: F401
from .heuristics import stage as _heuristics  # noqa: F401
from .quality import embed_stage, fasttext_stage  # noqa: F401
from .rephrase import stage as _rephrase  # noqa: F401
from .semantic import stage as _semantic  # noqa: F401
