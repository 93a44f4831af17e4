"""The Stage contract: everything the engine asks of a stage, declared here with its default.

A stage is plain Python over Arrow tables; it never imports an engine. Four kinds:

- ``Stage`` (streaming): ``setup()`` once per worker process or actor (load models there), then
  ``__call__(batch) -> batch`` on the *live* rows of a batch. A filter returns the same rows with
  a ``reject_reason`` column (null: keep); an annotator returns them with new columns.
- ``Modifier`` (a streaming stage that rewrites ``text``: PII redaction, text repair): the engine
  keeps ``num_chars``/``num_tokens`` true after it and counts what it changed.
- ``GlobalStage``: a streamed part (``__call__`` adds the columns its decision needs) and a global
  part (``global_step``), written only over the dataset operations of ``global_ops.DatasetOps``
  (``map``, ``partition_map``, ``collect``, ``materialize``, ``union``, ``read/write_parquet``),
  which every executor implements with its engine's own shuffle.
- ``GeneratingStage``: writes new documents (rephrase) instead of filtering its input.

A stage declares the columns it reads besides the core ones (``needs``, or ``columns_needed`` when
they depend on its parameters) and those it ``adds``; the pipeline is checked when it is built, so
a stage placed before the one that provides its input is a config error, not a failure at the
global step. The engine's own working columns never reach a stage's code.

Any stage may also return a ``stage_counts`` column (``engine.counts``): per row, counters of what
it did (PII kinds replaced, lines removed by rule, eval items matched); the engine sums them per
stage into the report (``report_counts`` presents them).
"""
from __future__ import annotations

import importlib
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any, ClassVar, NamedTuple, Optional

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field


class Resources(BaseModel):
    """What one worker of a stage asks the engine for (Ray Data's explicit per-operator resources)."""

    model_config = ConfigDict(extra="forbid")
    num_cpus: float = Field(1.0, ge=0)
    num_gpus: float = Field(0.0, ge=0)
    memory: Optional[int] = Field(None, ge=0, description="bytes of memory per actor")
    concurrency: int = Field(1, ge=1, description="max actors in the pool")
    batch_size: int = Field(1000, ge=1, description="rows per batch")
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model replica is split across (LLM stages)")


class Part(NamedTuple):
    """One stage a config entry runs as (``Stage.composite_parts``)."""

    cls: type
    name: str
    params: BaseModel
    resources: Resources


class Stage:
    """A streaming stage. Subclasses set ``name`` and ``Params`` and implement ``__call__``."""

    name: ClassVar[str] = "stage"
    #: pydantic model of this stage's parameters (validated before any work)
    Params: ClassVar[type[BaseModel]] = BaseModel
    #: columns this stage reads besides the core ones (id, row_key, text, source, url, meta,
    #: num_chars, num_tokens), with their Arrow types: an earlier stage must add them
    needs: ClassVar[dict[str, pa.DataType]] = {}
    #: columns this stage adds, with their Arrow types (the engine keeps batch schemas uniform)
    adds: ClassVar[dict[str, pa.DataType]] = {}
    #: added columns that are working state, not output (dropped from the curated data)
    internal_columns: ClassVar[tuple[str, ...]] = ()
    #: a column of scores in [0, 1] the report draws per language (e.g. quality_score); None: none
    score_column: ClassVar[Optional[str]] = None
    #: a struct column of per-document measures (one float field per measure) that the report
    #: histograms per language with these bin edges per field (e.g. the heuristics' word counts)
    measures_column: ClassVar[Optional[str]] = None
    measure_bins: ClassVar[dict[str, list[float]]] = {}
    #: default resources; the config may override any field
    default_resources: ClassVar[Resources] = Resources()

    def __init__(self, params: BaseModel, languages: Any = None, resources: Resources | None = None):
        self.params = params
        self.languages = languages  # engine.languages.LanguageTable, per-language parameters
        self.resources = resources or self.default_resources

    # -- when the config is read (on the driver, before any work) --------------------------------
    @classmethod
    def path_params(cls, raw: dict) -> tuple[str, ...]:
        """Keys of this stage's raw config entry that hold file paths, dotted for nested keys
        (``index.read``; a list of paths is fine): a relative one is resolved against the config
        file's folder."""
        return ("model_path",)

    @classmethod
    def check_params(cls, params: BaseModel) -> Iterable[tuple[str, str]]:
        """Problems a pydantic model cannot see (a missing model file, a missing extra), as
        ``(key, message)``; each becomes a config error under ``stages[i].<key>``. Default: none."""
        return ()

    @classmethod
    def columns_needed(cls, params: BaseModel) -> dict[str, pa.DataType]:
        """The columns these parameters make the stage read (default: ``needs``); e.g. a dedup that
        keeps the best ``quality_score`` needs a quality stage before it."""
        return dict(cls.needs)

    @classmethod
    def composite_parts(cls, name: str, params: BaseModel, resources: Resources) -> list[Part]:
        """The stages one config entry runs as, in order (e.g. a CPU tokenizer, then a model on its
        own GPU pool). Default: the entry itself."""
        return [Part(cls, name, params, resources)]

    @classmethod
    def incremental(cls, params: BaseModel, folder: str) -> BaseModel:
        """Parameters for an incremental run (``output.incremental``), whose state for later runs
        goes under ``folder`` (a dedup stage's index of what it kept, checked by the next runs).
        Default: unchanged."""
        return params

    @classmethod
    def prepare(cls, params: BaseModel, folder: str) -> BaseModel:
        """Build, once per run on the driver, what every worker then loads in ``setup()`` (e.g. a
        decontamination index of eval sets), under ``folder`` (a URL in the run's work area, kept
        until the run is committed, so a resumed run finds it); return the parameters that name
        it. Default: nothing to build."""
        return params

    # -- at run time ---------------------------------------------------------------------------------
    def setup(self) -> None:
        """Load models and other heavy objects; called once per worker process or actor."""

    def external_state(self, run_id: str) -> Any:
        """What this stage reads besides the run's inputs (e.g. earlier runs' band indexes), as JSON
        data. It goes into the run's fingerprint, so a change there redoes the run; ``run_id`` names
        what this run itself leaves behind, which must not count. Called on the driver, before
        ``setup()``. Default: nothing."""
        return None

    def __call__(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - contract
        """The live rows of a batch -> the same rows, with this stage's columns (and a
        ``reject_reason`` where a filter rejects)."""
        raise NotImplementedError

    # -- for the report --------------------------------------------------------------------------------
    @classmethod
    def report_reason(cls, reasons: pa.Array) -> pa.Array:
        """The label the report counts each reject reason under (default: the reason itself).
        A stage whose reasons carry per-row detail maps them to a few labels here."""
        return reasons

    @classmethod
    def report_counts(cls, params: BaseModel, counts: dict[str, int]) -> dict:
        """The report's view of this stage's summed counters (``stage_counts``, and a modifier's
        ``docs_modified``/``chars_removed``/``tokens_removed``), as JSON data. Default: the counts,
        largest first."""
        return {"counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))}

    @classmethod
    def measure_thresholds(cls, params: BaseModel, lang_params: Any) -> dict[str, list[float]]:
        """Per measure of ``measures_column``, the thresholds one language's parameters set (the
        report draws them on the histograms). Default: none."""
        return {}

    @classmethod
    def score_thresholds(cls, params: BaseModel, figures: dict) -> dict[str, Optional[float]]:
        """Per language, the ``score_column`` threshold the report marks (from the parameters, or
        from what the global step chose: ``figures``). Default: none."""
        return {}


class Modifier(Stage):
    """A streaming stage that rewrites ``text`` (PII redaction, text repair) instead of, or besides,
    rejecting rows. ``__call__`` returns the same rows with new ``text``; the engine then recounts
    ``num_chars`` and ``num_tokens`` (in the run's tokenizer) of every row whose text changed and
    counts, per stage, the documents it changed and the characters and tokens it removed (net: a
    placeholder longer than what it replaced counts negative), so the funnel from input to output
    stays exact. A row it leaves alone must come back byte-identical."""


class GlobalStage(Stage):
    """A stage whose decision needs every row of the run (exact and near dedup, keep_top cuts).

    ``__call__`` (streamed) adds the columns the decision needs. Then the engine reads back, for
    every live row of the phase, the ``shuffle_columns()`` (never the text) plus ``node``, an int64
    id unique in the run, and calls ``global_step(ops, keys)`` once, on the driver. The step
    returns a dataset of decisions: one row per row decided on, with its ``row_key`` and ``node``
    (carried from its key row), its ``reject_reason`` (null: keep) and any other column the
    stage adds (e.g. ``dup_cluster_size``), which the engine sets on that row. The engine writes
    the decisions beside the phase and applies them to the rows they name, without moving text.
    """

    @classmethod
    def is_global_for(cls, params: BaseModel) -> bool:
        """Whether these parameters need the global step (e.g. a quality stage needs it for
        ``keep_top``, not for a fixed ``threshold``); a stage that does not runs streamed only."""
        return True

    def shuffle_columns(self) -> list[str]:
        """The columns of each live row the global step reads (``row_key`` names a row in its
        decisions and gives input order; ``node`` is always added)."""
        return ["row_key", "id"]

    def global_step(self, ops, keys) -> tuple[Any, dict]:  # pragma: no cover - contract
        """``keys`` (a dataset of ``ops``) -> (decisions dataset, figures for the report: small JSON
        data such as rounds or chosen thresholds). ``ops.run_id`` names what the run leaves for
        later runs (e.g. an index folder). Helpers: ``global_ops.group_reduce``."""
        raise NotImplementedError


class GeneratingStage(Stage):
    """A stage that writes new documents (rephrase) instead of filtering its input.

    ``__call__`` gets the live rows of a batch and returns only the *new* rows, each with its own
    unique ``row_key`` (a rejected generation carries a ``reject_reason``). The input rows pass on
    untouched. The engine runs such a stage as a phase of its own: its rows are committed per
    chunk (a re-run never regenerates a committed chunk), stamped with the stage's name, counted
    in the run's tokenizer, read by every later stage beside the documents they came from, and
    written to ``OUT/<emits_to>/language=xx/``. Generation stops once the kept new rows hold
    ``budget()`` tokens: the output is the shortest prefix, in input order, that reaches it.

    ``llm_step()`` may describe the generation as an LLM-engine step over a whole dataset (on Ray:
    ``ray.data.llm``); then the engine runs ``requests`` -> the LLM engine -> ``documents``
    instead of ``__call__``.
    """

    #: the output folder of the kept new rows (``OUT/<emits_to>/language=xx/``)
    emits_to: ClassVar[str] = "synthetic"
    #: columns of the new rows the report groups generation costs by, and the columns it sums
    #: (the last one counts the model's output tokens)
    accounting_by: ClassVar[tuple[str, ...]] = ()
    accounting_sums: ClassVar[tuple[str, ...]] = ()

    def budget(self) -> Optional[int]:
        """Tokens (``num_tokens`` of kept new rows) after which generation stops; None: no limit."""
        return None

    def llm_step(self) -> Optional[LLMStep]:
        """The generation as an LLM-engine step, or None (then ``__call__`` generates)."""
        return None

    def gpus_per_replica(self) -> float:
        """GPUs one replica of the generating model holds (for GPU-hours in the report)."""
        step = self.llm_step()
        if step is not None:   # an LLM-engine step asks one GPU per tensor-parallel rank
            return step.engine_kwargs.get("tensor_parallel_size", self.resources.tensor_parallel_size)
        return self.resources.num_gpus * self.resources.tensor_parallel_size


#: the column an LLM engine's output row carries when the engine failed that request (the Ray
#: adapter translates Ray Data's own); ``LLMStep.documents`` turns it into a reject
LLM_ERROR = "llm_error"


class LLMStep(BaseModel):
    """A generating stage's work as an LLM engine step: ``requests(live rows) -> table``, one row
    per request with what ``preprocess(row)`` turns into ``{"messages", "sampling_params", ...}``;
    the engine generates; ``postprocess(row)`` maps each output row (``generated_text``,
    ``num_input_tokens``, ``num_generated_tokens`` ...) to plain columns; ``documents(table)``
    makes the new rows (a request the engine failed comes with ``LLM_ERROR`` set and skips
    ``postprocess``). ``engine_kwargs`` go to the LLM engine as they are."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model: str
    engine_kwargs: dict = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    requests: Any
    preprocess: Any
    postprocess: Any
    documents: Any


# -- the registry: config ``type:`` -> class ---------------------------------------------------------
_REGISTRY: dict[str, type[Stage]] = {}
_BUILTINS_LOADED = False


def register_stage(type_name: str):
    """Class decorator: make a stage available to configs as ``type: <type_name>``."""

    def wrap(cls: type[Stage]) -> type[Stage]:
        _REGISTRY[type_name] = cls
        return cls

    return wrap


def load_builtins() -> None:
    """Import the stage packages registered under the ``tokenmill.stages`` entry-point group once
    (tokenmill's own: ``tokenmill.stages``): each registers its stages (and their language
    parameters) as it is imported."""
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        for ep in sorted(entry_points(group="tokenmill.stages"), key=lambda ep: ep.name):
            importlib.import_module(ep.value)


def known_stage_types() -> list[str]:
    load_builtins()
    return sorted(_REGISTRY)


def providers_of(column: str) -> list[str]:
    """The registered stage types that add ``column``."""
    load_builtins()
    return sorted(t for t, cls in _REGISTRY.items() if column in cls.adds)


def get_stage_class(type_name: str) -> type[Stage]:
    """Look a stage up by config ``type``; ``package.module:Class`` loads a user's own stage."""
    load_builtins()
    if type_name in _REGISTRY:
        return _REGISTRY[type_name]
    if ":" in type_name:
        module, _, attr = type_name.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            raise TypeError(f"{type_name} is not a tokenmill Stage")
        return cls
    raise KeyError(type_name)
