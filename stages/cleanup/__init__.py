"""The filters every pre-training pipeline runs before and around the model-based ones: a URL
blocklist (``url_filter``), text repair (``text_repair``: ftfy, Unicode normalisation, boilerplate
and C4 line rules), benchmark decontamination (``decontaminate``) and PII redaction (``pii``).
``text_repair`` and ``pii`` are modifiers (``engine.stage.Modifier``): they rewrite ``text``."""
from . import decontaminate, pii, repair, url  # noqa: F401
