"""The Stage protocol, per-stage resources, and the registry that maps a config ``type:`` to a class.

A stage is plain Python over Arrow: ``setup()`` once per actor (load models there), then
``__call__(batch) -> batch`` on the *live* rows of a batch. A filter returns the same rows
with a ``reject_reason`` column (null = keep); the executor stamps ``reject_stage``.

Global stages (exact dedup, later MinHash) additionally name a key column and a pure
``reduce_group(table) -> table`` over all rows sharing a key; executors run the shuffle.
"""
from __future__ import annotations

import importlib
from typing import Any, ClassVar, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field


class Resources(BaseModel):
    """What one actor of a stage asks the engine for (Ray Data's explicit per-operator resources)."""

    model_config = ConfigDict(extra="forbid")
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory: Optional[int] = Field(None, ge=0, description="bytes of memory per actor")
    concurrency: int = Field(1, ge=1, description="max actors in the pool")
    batch_size: int = Field(1000, ge=1, description="rows per batch")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model replica is split across (LLM stages)")


class Stage:
    """Base class for stages. Subclasses set ``name`` and ``Params`` and implement ``__call__``."""

    name: ClassVar[str] = "stage"
    #: pydantic model of this stage's parameters (validated before any work)
    Params: ClassVar[type[BaseModel]] = BaseModel
    #: True for filters: their output carries a ``reject_reason`` column
    is_filter: ClassVar[bool] = False
    #: columns this stage adds, with their Arrow types (the executor keeps batch schemas uniform)
    adds: ClassVar[dict] = {}
    #: added columns that are working state, not output (dropped from the curated data)
    internal_columns: ClassVar[tuple[str, ...]] = ()
    #: default resources; the config may override any field
    default_resources: ClassVar[Resources] = Resources()

    def __init__(self, params: BaseModel, languages: Any = None, resources: Resources | None = None):
        self.params = params
        self.languages = languages  # engine.languages.LanguageTable, per-language parameters
        self.resources = resources or self.default_resources

    @classmethod
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        """The keys of this stage's raw config entry that are file paths (a relative one is resolved
        against the config file's folder)."""
        return ("model_path",)

    @classmethod
    def report_reason(cls, reasons: pa.Array) -> pa.Array:
        """The label the report counts each reject reason under (default: the reason itself).
        A stage whose reasons carry per-row detail maps them to a few labels here."""
        return reasons

    def setup(self) -> None:
        """Load models and other heavy objects; called once per actor."""

    def external_state(self, run_id: str) -> Any:
        """What this stage reads besides the run's inputs (e.g. earlier runs' band indexes), as JSON
        data. It goes into the run's fingerprint, so a change there redoes the run; ``run_id`` names
        what this run itself leaves behind, which must not count. Called on the driver, before
        ``setup()``. Default: nothing."""
        return None

    @classmethod
    def incremental(cls, params: BaseModel, folder: str) -> BaseModel:
        """Parameters for an incremental run (``output.incremental``), whose state for later runs
        goes under ``folder`` (a dedup stage's index of what it kept, checked by the next runs).
        Default: unchanged."""
        return params

    def __call__(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - protocol
        raise NotImplementedError


class GlobalStage(Stage):
    """A stage whose decision needs every row sharing a key across the whole run.

    ``__call__`` (streamed) adds ``key_column``; the executor groups live rows by that key
    with the engine's own shuffle and calls ``reduce_group`` on each group, which returns
    ``(row_key, reject_reason)`` rows to reject; the engine writes them partitioned by the
    chunk each row came from and applies them to that chunk's rows without moving any text.
    """

    key_column: ClassVar[str] = "key"
    #: columns reduce_group needs besides the key
    group_columns: ClassVar[tuple[str, ...]] = ("id",)

    @classmethod
    def is_global_for(cls, params: BaseModel) -> bool:
        """Whether these parameters need the global step (e.g. a quality stage needs it for
        ``keep_top``, not for a fixed ``threshold``); a stage that does not runs streamed only."""
        return True

    def has_global_step(self) -> bool:
        """Whether the engine runs ``global_step(ops, keys)`` (several shuffles on ``DatasetOps``)
        instead of grouping by ``key_column`` for ``reduce_group``."""
        return callable(getattr(self, "global_step", None))

    def reduce_group(self, group: pa.Table) -> pa.Table:  # pragma: no cover - protocol
        raise NotImplementedError


class GeneratingStage(Stage):
    """A stage that writes new documents (rephrase) instead of filtering its input.

    ``__call__`` gets the live rows of a batch and returns only the *new* rows, built from the
    input's (``take`` them, so ``_chunk`` and the inherited columns stay), each with its own unique
    ``row_key``; a rejected generation carries a ``reject_reason``. The input rows pass on
    untouched. The engine runs such a stage as a phase of its own: its rows are committed per
    chunk (a re-run never regenerates a committed chunk), stamped with the stage's name, counted
    in the run's tokenizer, read by every later stage beside the documents they came from, and
    written to ``OUT/<emits_to>/language=xx/``. Generation stops once the kept new rows hold
    ``budget()`` tokens: the output is the shortest prefix, in input order, that reaches it.

    ``llm_step()`` may describe the generation as an LLM-engine step over a whole Dataset (on Ray:
    ``ray.data.llm``); then the engine runs ``requests`` -> the LLM engine -> ``documents``
    instead of ``__call__``.
    """

    emits_to: ClassVar[str] = "synthetic"
    #: columns of the new rows the report groups generation costs by, and the columns it sums
    accounting_by: ClassVar[tuple[str, ...]] = ()
    accounting_sums: ClassVar[tuple[str, ...]] = ()

    def budget(self) -> Optional[int]:
        """Tokens (``num_tokens`` of kept new rows) after which generation stops; None: no limit."""
        return None

    def llm_step(self) -> Optional["LLMStep"]:
        return None


class LLMStep(BaseModel):
    """A generating stage's work as an LLM engine step: ``requests(live rows) -> table``, one row
    per request with what ``preprocess(row)`` turns into ``{"messages", "sampling_params", ...}``;
    the engine generates; ``postprocess(row)`` maps each output row (``generated_text``,
    ``num_input_tokens``, ``num_generated_tokens`` ...) to plain columns; ``documents(table)``
    makes the new rows. ``engine_kwargs`` go to the LLM engine as they are."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model: str
    engine_kwargs: dict = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    requests: Any
    preprocess: Any
    postprocess: Any
    documents: Any


_REGISTRY: dict[str, type[Stage]] = {}
_BUILTINS_LOADED = False


def register_stage(type_name: str):
    """Class decorator: make a stage available to configs as ``type: <type_name>``."""

    def wrap(cls: type[Stage]) -> type[Stage]:
        _REGISTRY[type_name] = cls
        return cls

    return wrap


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        importlib.import_module("tokenmill.stages")  # plugin discovery: the package registers itself
        _BUILTINS_LOADED = True


def known_stage_types() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_stage_class(type_name: str) -> type[Stage]:
    """Look a stage up by config ``type``; ``package.module:Class`` loads a user's own stage."""
    _load_builtins()
    if type_name in _REGISTRY:
        return _REGISTRY[type_name]
    if ":" in type_name:
        module, _, attr = type_name.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise TypeError(f"{type_name} is not a tokenmill Stage")
        return cls
    raise KeyError(type_name)
