"""A bad config stops before any work, naming the key and what was expected."""
from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tokenmill.engine.config import ConfigError, load_config

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "configs" / "sample" / "web.jsonl.gz"

BASE = f"""\
input:
  paths: ["{WEB}"]
output:
  path: out
"""


def write(tmp_path: Path, body: str, name: str = "bad.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def errors_of(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    err = exc.value
    assert err.errors, "ConfigError without errors"
    assert all(isinstance(k, str) and isinstance(m, str) for k, m in err.errors)
    assert err.source and Path(err.source).name == path.name  # the file is named
    return err.errors


def message_for(errors: list[tuple[str, str]], key: str) -> str:
    found = [m for k, m in errors if k == key]
    assert found, f"no error for {key!r}; got {errors}"
    return found[0]


# (id, YAML body, key path, distinctive parts of the message)
BAD = [
    ("unknown-top-level-key", BASE + "stages: [{type: langid}]\nfoo: 1\n",
     "foo", ["unknown key"]),
    ("missing-input", "output: {path: out}\nstages: [{type: langid}]\n",
     "input", ["required key is missing"]),
    ("missing-output-path", f'input: {{paths: ["{WEB}"]}}\noutput: {{compression: zstd}}\nstages: [{{type: langid}}]\n',
     "output.path", ["required key is missing"]),
    ("unknown-stage-type", BASE + "stages: [{type: bogus}]\n",
     "stages[0].type", ["unknown stage type 'bogus'", "langid", "heuristics", "exact_dedup", "package.module:Class"]),
    ("unimportable-stage-class", BASE + "stages: [{type: 'no_such_pkg.mod:Stage'}]\n",
     "stages[0].type", ["unknown stage type 'no_such_pkg.mod:Stage'"]),
    ("unknown-stage-param", BASE + "stages: [{type: langid, foo: 1}]\n",
     "stages[0].foo", ["unknown key"]),
    ("unknown-param-second-stage", BASE + "stages: [{type: langid}, {type: heuristics, rulez: [c4]}]\n",
     "stages[1].rulez", ["unknown key"]),
    ("wrong-type-stage-param", BASE + "stages: [{type: langid, max_chars: lots}]\n",
     "stages[0].max_chars", ["valid integer", "'lots'"]),
    ("bad-heuristics-rule", BASE + "stages: [{type: heuristics, rules: [gopher, c4]}]\n",
     "stages[0].rules[0]", ["'gopher_quality'", "'fineweb'", "(got 'gopher')"]),
    ("batch-size-zero", BASE + "stages: [{type: langid, resources: {batch_size: 0}}]\n",
     "stages[0].resources.batch_size", ["greater than or equal to 1", "(got 0)"]),
    ("unknown-resource", BASE + "stages: [{type: langid, resources: {gpus: 1}}]\n",
     "stages[0].resources.gpus", ["unknown key"]),
    ("lid-threshold-above-one", BASE + "stages: [{type: langid}]\nlanguages: {overrides: {de: {lid_threshold: 1.5}}}\n",
     "languages.overrides.de.lid_threshold", ["less than or equal to 1", "(got 1.5)"]),
    ("bad-nested-override", BASE + "stages: [{type: langid}]\nlanguages: {overrides: {th: {gopher_quality: {min_doc_words: many}}}}\n",
     "languages.overrides.th.gopher_quality.min_doc_words", ["valid integer", "'many'"]),
    ("bad-key-in-language-defaults", BASE + "stages: [{type: langid}]\nlanguages: {defaults: {lid_treshold: 0.5}}\n",
     "languages.defaults.lid_treshold", ["unknown key"]),
    ("bad-value-in-language-defaults", BASE + "stages: [{type: langid}]\nlanguages: {defaults: {word_tokenizer: spaces}}\n",
     "languages.defaults.word_tokenizer", ["'whitespace'", "'cjk'", "'thai'", "(got 'spaces')"]),
    ("input-format-csv", f'input: {{paths: ["{WEB}"], format: csv}}\noutput: {{path: out}}\nstages: [{{type: langid}}]\n',
     "input.format", ["'jsonl'", "'parquet'", "'warc'", "(got 'csv')"]),
    ("input-path-matches-nothing", "input: {paths: [no/such/*.jsonl]}\noutput: {path: out}\nstages: [{type: langid}]\n",
     "input.paths[0]", ["matches no file", "no/such/*.jsonl"]),
    ("input-paths-empty", "input: {paths: []}\noutput: {path: out}\nstages: [{type: langid}]\n",
     "input", ["give either paths", "or common_crawl (a snapshot), one of them"]),
    ("input-paths-and-snapshot", "input: {paths: [a.jsonl], common_crawl: {snapshot: CC-MAIN-2025-26}}\n"
     "output: {path: out}\nstages: [{type: langid}]\n", "input", ["give either paths", "not both"]),
    ("input-snapshot-name", "input: {common_crawl: {snapshot: CC-2025}}\noutput: {path: out}\nstages: [{type: langid}]\n",
     "input.common_crawl.snapshot", ["CC-MAIN-2025-26", "got 'CC-2025'"]),
    ("duplicate-stage-names", BASE + "stages: [{type: heuristics}, {type: heuristics}]\n",
     "stages[1].name", ["duplicate stage name 'heuristics'", "unique name"]),
    ("duplicate-explicit-names", BASE + "stages: [{type: langid, name: step}, {type: heuristics, name: step}]\n",
     "stages[1].name", ["duplicate stage name 'step'"]),
    ("tokenizer-json-without-path", BASE + "stages: [{type: langid}]\ntokenizer: {kind: tokenizer_json}\n",
     "tokenizer.path", ["required when tokenizer.kind is tokenizer_json"]),
    ("tokenizer-path-missing-file", BASE + "stages: [{type: langid}]\ntokenizer: {kind: tokenizer_json, path: tok/tokenizer.json}\n",
     "tokenizer.path", ["file not found", "tokenizer.json"]),
    ("langid-model-path-missing", BASE + "stages: [{type: langid, model_path: models/lid.bin}]\n",
     "stages[0].model_path", ["file not found", "models/lid.bin"]),
    ("empty-stages", BASE + "stages: []\n",
     "stages", ["at least 1 item"]),
    ("missing-stages", BASE,
     "stages", ["required key is missing"]),
    ("stage-not-a-mapping", BASE + "stages: [langid]\n",
     "stages[0]", ["valid dictionary", "'langid'"]),
    ("stage-without-type", BASE + "stages: [{name: x}]\n",
     "stages[0].type", ["required key is missing"]),
    ("bad-name", BASE + "name: a/b\nstages: [{type: langid}]\n",
     "name", ["without '/'"]),
    ("languages-dir-not-a-folder", BASE + "stages: [{type: langid}]\nlanguages: {dir: nowhere}\n",
     "languages.dir", ["not a folder", "nowhere"]),
    ("top-level-not-a-mapping", "- input\n- output\n",
     "(top level)", ["expected a mapping"]),
    ("yaml-syntax-error", BASE + "stages: [{type: langid}\nname: x\n",
     "(yaml)", ["not valid YAML", "line 6"]),
    ("extends-missing-file", "extends: parent_nowhere.yaml\n" + BASE + "stages: [{type: langid}]\n",
     "extends", ["file not found", "parent_nowhere.yaml"]),
    ("extends-not-a-string", "extends: [a.yaml]\n" + BASE + "stages: [{type: langid}]\n",
     "extends", ["expected a path"]),
]


@pytest.mark.parametrize("body,key,parts", [pytest.param(b, k, p, id=i) for i, b, k, p in BAD])
def test_bad_config_names_key_and_expectation(tmp_path, body, key, parts):
    errors = errors_of(write(tmp_path, body))
    msg = message_for(errors, key)
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_at_least_twelve_bad_configs():
    assert len(BAD) >= 12


def test_relative_paths_in_errors_are_resolved_against_the_config_folder(tmp_path):
    errors = errors_of(write(tmp_path, BASE + "stages: [{type: langid, model_path: models/lid.bin}]\n", "sub/bad.yaml"))
    assert message_for(errors, "stages[0].model_path") == f"file not found: {tmp_path / 'sub' / 'models' / 'lid.bin'}"


def test_all_errors_are_reported_at_once(tmp_path):
    body = """\
        input: {paths: [no/such/file.jsonl], format: csv}
        output: {path: out}
        stages: [{type: langid, max_chars: lots}, {type: bogus}]
        tokenizer: {kind: sentencepiece}
    """
    errors = errors_of(write(tmp_path, body))
    keys = {k for k, _ in errors}
    # pydantic-level errors are collected together
    assert {"input.format", "tokenizer.kind"} <= keys
    body = BASE + "stages: [{type: langid, max_chars: lots}, {type: bogus}]\ntokenizer: {kind: tokenizer_json}\n"
    keys = {k for k, _ in errors_of(write(tmp_path, body, "b2.yaml"))}
    assert {"stages[0].max_chars", "stages[1].type", "tokenizer.path"} <= keys


def test_bad_key_in_language_defaults_is_reported_first(tmp_path):
    """The defaults key is named first (the same key is then repeated once per language file; see report)."""
    errors = errors_of(write(tmp_path, BASE + "stages: [{type: langid}]\nlanguages: {defaults: {lid_treshold: 0.5}}\n"))
    assert errors[0] == ("languages.defaults.lid_treshold", "unknown key")


def test_bad_language_file_in_custom_dir(tmp_path):
    langs = tmp_path / "langs"
    langs.mkdir()
    (langs / "xx.yaml").write_text("lid_threshold: 2\nword_tokenizer: whitespace\n", encoding="utf-8")
    errors = errors_of(write(tmp_path, BASE + "stages: [{type: langid}]\nlanguages: {dir: langs}\n"))
    msg = message_for(errors, "languages.dir/xx.yaml.lid_threshold")
    assert "less than or equal to 1" in msg and "(got 2)" in msg


def test_extends_cycle(tmp_path):
    write(tmp_path, "extends: b.yaml\n" + BASE + "stages: [{type: langid}]\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "a.yaml")
    assert exc.value.errors[0][0] == "extends"
    assert "cycle" in exc.value.errors[0][1]


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(tmp_path / "nope.yaml")
    assert exc.value.errors == [("(file)", "config file not found")]


def test_model_path_error_names_the_right_stage_after_an_invalid_one(tmp_path):
    body = BASE + "stages: [{type: bogus}, {type: langid, model_path: missing.ftz}]\n"
    errors = errors_of(write(tmp_path, body))
    assert "stages[1].model_path" in {k for k, _ in errors}, errors


# --------------------------------------------------------------------------- extends: merging a parent

def _parent_and_child(tmp_path: Path) -> tuple[Path, Path]:
    base = tmp_path / "base"
    (base / "data").mkdir(parents=True)
    shutil.copy(WEB, base / "data" / "web.jsonl.gz")
    (base / "models").mkdir()
    shutil.copy(REPO / "configs" / "languages" / "en.yaml", base / "models" / "not_a_model.bin")  # any file
    write(base, """\
        name: parent
        input:
          paths: [data/web.jsonl.gz]
        output:
          path: out_parent
          compression: snappy
        stages:
          - type: langid
            model_path: models/not_a_model.bin
          - type: heuristics
            rules: [c4, fineweb]
        languages:
          overrides:
            de: {lid_threshold: 0.7}
    """, "parent.yaml")
    child = write(tmp_path / "child", """\
        extends: ../base/parent.yaml
        name: child
        output:
          path: out_child
        languages:
          overrides:
            fr: {lid_threshold: 0.8}
    """, "child.yaml")
    return base / "parent.yaml", child


def test_extends_merges_child_over_parent(tmp_path):
    _, child = _parent_and_child(tmp_path)
    pipe = load_config(child)
    cfg = pipe.config
    assert cfg.name == "child"
    # the child's output.path wins, resolved against the child's folder; the parent's other output keys stay
    assert cfg.output.path == str((tmp_path / "child" / "out_child").resolve())
    assert cfg.output.compression == "snappy"
    # the parent's stages are kept
    assert [s.name for s in pipe.stages] == ["langid", "heuristics"]
    assert list(pipe.stages[1].params.rules) == ["c4", "fineweb"]
    # mappings merge key by key
    assert pipe.languages.get("de").lid_threshold == 0.7
    assert pipe.languages.get("fr").lid_threshold == 0.8
    assert pipe.source == child.resolve()


def test_extends_parent_paths_resolve_against_parent_folder(tmp_path):
    _, child = _parent_and_child(tmp_path)
    pipe = load_config(child)
    base = (tmp_path / "base").resolve()
    assert pipe.config.input.paths == [str(base / "data" / "web.jsonl.gz")]
    assert pipe.stages[0].params.model_path == str(base / "models" / "not_a_model.bin")


def test_extends_child_stages_replace_parent_list(tmp_path):
    _, child = _parent_and_child(tmp_path)
    child.write_text(child.read_text() + "stages: [{type: exact_dedup}]\n", encoding="utf-8")
    pipe = load_config(child)
    assert [s.name for s in pipe.stages] == ["exact_dedup"]


def test_extends_errors_in_parent_are_reported(tmp_path):
    parent, child = _parent_and_child(tmp_path)
    parent.write_text(parent.read_text().replace("rules: [c4, fineweb]", "rules: [c4, fineweb]\n    foo: 1"),
                      encoding="utf-8")
    errors = errors_of(child)
    assert message_for(errors, "stages[1].foo") == "unknown key"


# --------------------------------------------------------------------------- the CLI

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tokenmill.engine.cli", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_cli_validate_bad_config_exits_2_and_names_key(tmp_path):
    bad = write(tmp_path, BASE + "stages: [{type: langid, resources: {batch_size: 0}}]\n")
    res = _cli("validate", str(bad))
    assert res.returncode == 2, res.stderr
    assert "stages[0].resources.batch_size" in res.stderr
    assert "greater than or equal to 1" in res.stderr
    assert str(bad) in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_validate_yaml_error_exits_2(tmp_path):
    bad = write(tmp_path, BASE + "stages: [{type: langid}\nname: x\n")
    res = _cli("validate", str(bad))
    assert res.returncode == 2
    assert "(yaml)" in res.stderr and "not valid YAML" in res.stderr


def test_cli_validate_good_config_exits_0():
    res = _cli("validate", "configs/quickstart.yaml")
    assert res.returncode == 0, res.stderr
    assert "ok" in res.stdout and "text_repair, langid, pii, heuristics, exact_dedup" in res.stdout


def test_unreadable_remote_model_is_a_config_error_and_can_be_left_to_the_cluster(tmp_path, monkeypatch):
    """A model on an object store this machine cannot read: a config error naming the stage (exit 2),
    not a traceback; ``check_remote=False`` (k8s render, submit) leaves that check to the run."""
    import socket

    with socket.socket() as s:   # a loopback port nothing listens on: the store refuses at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "x",
                 "AWS_SECRET_ACCESS_KEY": "x", "AWS_EC2_METADATA_DISABLED": "true",
                 "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard"}.items():
        monkeypatch.setenv(k, v)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent(f"""
        input: {{paths: ["{tmp_path}/in/*.jsonl"]}}
        output: {{path: s3://bucket/out}}
        stages:
          - type: langid
          - type: quality_fasttext
            model_path: s3://models/quality
            threshold: 0.5
    """))
    import s3fs

    try:
        with pytest.raises(ConfigError) as e:
            load_config(cfg, check_inputs=False)
    finally:   # fsspec keeps the S3 filesystem it made, bound to the dead endpoint: later tests must not get it
        s3fs.S3FileSystem.clear_instance_cache()
    assert e.value.errors[0][0] == "stages[1]" and "could not check its files" in e.value.errors[0][1]
    assert [s.name for s in load_config(cfg, check_inputs=False, check_remote=False).stages] == \
        ["langid", "quality_fasttext"]


def test_a_stage_that_needs_a_column_no_earlier_stage_adds_is_a_config_error(tmp_path):
    """minhash_dedup keeping the best quality_score with no quality stage before it fails when the
    config is read (it used to pass and fail at the global step), naming the entry and the fix."""
    from tokenmill.engine.config import ConfigError, build_pipeline

    (tmp_path / "in.jsonl").write_text('{"text": "x"}\n')
    base = {"input": {"paths": [str(tmp_path / "in.jsonl")]}, "output": {"path": str(tmp_path / "out")}}
    with pytest.raises(ConfigError) as err:
        build_pipeline({**base, "stages": [{"type": "langid"}, {"type": "minhash_dedup", "keep": "quality_score"}]})
    assert err.value.errors == [("stages[1]", "minhash_dedup needs the column 'quality_score', which no stage before "
                                 "it adds; put one of quality_embed, quality_fasttext before it")]
    with pytest.raises(ConfigError) as err:   # after it is too late
        build_pipeline({**base, "stages": [{"type": "minhash_dedup", "keep": "quality_score"},
                                           {"type": "quality_fasttext", "model_path": str(tmp_path), "threshold": 0.5}]})
    assert any(k == "stages[0]" and "quality_score" in m for k, m in err.value.errors)
    # a stage whose parameters need nothing more passes
    assert build_pipeline({**base, "stages": [{"type": "minhash_dedup"}]}).stages[0].name == "minhash_dedup"
