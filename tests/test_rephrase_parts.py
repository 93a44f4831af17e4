"""The rephrase stage's first parts (issue 10, in progress): the versioned prompt library (shipped
styles, a user's folder that adds or overrides, bad files named with the problem) and the
post-processing of generations (preambles, too short, truncated, copies of the prompt, QA split)."""
from __future__ import annotations

import pytest

from tokenmill.stages.rephrase.postprocess import copy_share, qa_pairs, reject_reason, strip_preamble
from tokenmill.stages.rephrase.styles import load_styles

SHIPPED = {"wikipedia", "qa", "distill", "extract_knowledge", "knowledge_list", "faq", "tutorial", "table",
           "simple", "erudite"}


def test_shipped_styles_render_in_the_document_language():
    styles = load_styles()
    assert set(styles) == SHIPPED
    assert {s.split for s in styles.values()} == {None, "qa"} and styles["qa"].split == "qa"
    msgs = styles["wikipedia"].messages("Der Hund schläft.", "German")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Der Hund schläft." in msgs[1]["content"] and "Write in German" in msgs[1]["content"]
    assert all(s.version >= 1 for s in styles.values())


def test_a_users_folder_adds_and_overrides_styles(tmp_path):
    (tmp_path / "poem.yaml").write_text("name: poem\nversion: 1\nsystem: s\nuser: 'A poem in {language_name}: {document}'\n")
    (tmp_path / "qa.yaml").write_text("name: qa\nversion: 7\nsystem: s\nuser: '{document}'\nsplit: qa\n")
    styles = load_styles(str(tmp_path))
    assert set(styles) == SHIPPED | {"poem"} and styles["qa"].version == 7
    assert styles["poem"].messages("x", "French")[1]["content"] == "A poem in French: x"


@pytest.mark.parametrize("body, problem", [
    ("name: a\nversion: 1\nsystem: s\n", "missing keys ['user']"),
    ("name: a\nversion: 1\nsystem: s\nuser: '{document}'\ncolour: red\n", "unknown keys ['colour']"),
    ("name: a\nversion: one\nsystem: s\nuser: '{document}'\n", "version must be an integer"),
    ("name: a\nversion: 1\nsystem: s\nuser: '{document} {topic}'\n", "may use only"),
    ("name: a\nversion: 1\nsystem: s\nuser: 'no document here'\n", "must contain {document}"),
    ("name: a\nversion: 1\nsystem: s\nuser: '{document}'\nsplit: table\n", "split must be qa"),
])
def test_a_bad_style_file_is_named_with_its_problem(tmp_path, body, problem):
    (tmp_path / "bad.yaml").write_text(body)
    with pytest.raises(ValueError, match="bad.yaml") as err:
        load_styles(str(tmp_path))
    assert problem in str(err.value)


def test_preambles_are_stripped_and_bad_generations_get_a_reason():
    assert strip_preamble("Here is a paraphrased version of the text:\nThe cat sat.") == "The cat sat."
    assert strip_preamble("Sure! Here's the rewritten article:\n\nBody.") == "Body."
    assert strip_preamble("Here we go again with the story.") == "Here we go again with the story."
    words = [f"word{i}" for i in range(200)]
    source = " ".join(words)
    assert reject_reason(" ".join(words[:60]), source, "stop") == "repeats_prompt"
    assert copy_share(" ".join(words[:60]), source) == 1.0
    assert copy_share(" ".join(words[:30] + [f"new{i}" for i in range(30)]), source) < 0.5
    assert reject_reason("short", source, "stop") == "too_short"
    assert reject_reason("x " * 100, source, "length") == "truncated"
    assert reject_reason("A fresh text about something else entirely, long enough to keep.", source, "stop") is None


def test_qa_output_is_split_into_pairs():
    text = ("Question: What is MinHash?\nAnswer: A sketch of a set.\n\n"
            "**Q2:** Why bands?\n**A2:** To find\nsimilar pairs.\nQuestion: Empty?\nAnswer: ")
    assert qa_pairs(text) == ["Question: What is MinHash?\nAnswer: A sketch of a set.",
                              "Question: Why bands?\nAnswer: To find\nsimilar pairs."]
    assert qa_pairs("No questions here.") == []


def _words(text: str) -> int:
    return len(text.split())


def test_long_documents_are_cut_at_paragraphs_then_lines_then_words():
    from tokenmill.stages.rephrase.assign import chunks

    para = lambda n, w: " ".join(f"p{n}w{i}" for i in range(w))
    doc = "\n\n".join([para(0, 30), para(1, 30), para(2, 30)])
    assert chunks(doc, 70, _words) == [para(0, 30) + "\n\n" + para(1, 30), para(2, 30)]
    lines = "\n".join(para(i, 20) for i in range(5))          # one paragraph of five lines
    assert chunks(lines, 45, _words) == ["\n".join(para(i, 20) for i in (0, 1)), "\n".join(para(i, 20) for i in (2, 3)),
                                         para(4, 20)]
    long_line = para(9, 100)
    got = chunks(long_line, 40, _words)
    assert [len(c.split()) for c in got] == [40, 40, 20] and " ".join(got) == long_line
    assert chunks(para(0, 10), 40, _words) == [para(0, 10)] and chunks("  \n ", 40, _words) == []
    assert all(_words(c) <= 40 for c in chunks(doc + "\n\n" + long_line, 40, _words))


def test_style_mix_and_routing_by_quality_bucket():
    import numpy as np

    from tokenmill.stages.rephrase.assign import styles_for

    ids = [f"doc{i}" for i in range(4000)]
    mix = {"wikipedia": 0.3, "qa": 0.3, "distill": 0.2, "tutorial": 0.2}
    got = styles_for(ids, mix, seed=0)
    for style, share in mix.items():
        assert abs(got.count(style) / len(ids) - share) < 0.03, style
    assert styles_for(ids[:50], mix, seed=0) == got[:50]           # per document: not per batch
    assert styles_for(ids, mix, seed=1) != got
    scores = np.linspace(0, 1, len(ids))
    routes = [(0.0, {"wikipedia": 1.0}), (0.5, {"qa": 0.5, "distill": 0.5})]
    routed = styles_for(ids, mix, seed=0, scores=scores, routes=routes)
    assert set(routed[:1999]) == {"wikipedia"} and set(routed[2001:]) == {"qa", "distill"}
    assert styles_for(ids[:3], mix, scores=np.array([np.nan, -1.0, 0.7]), routes=routes)[:2] == ["wikipedia"] * 2


def test_an_over_long_word_is_cut_in_halves_until_it_fits():
    from tokenmill.stages.rephrase.assign import chunks

    count = lambda text: len(text) // 4 + 1
    blob = "a" * 4000
    got = chunks(f"intro line\n\n{blob}\n\nlast line", 100, count)
    assert all(count(c) <= 100 for c in got) and len(got) >= 10
    assert "".join(got[1:-1]) == blob and got[0] == "intro line" and got[-1] == "last line"


def _openai_stage():
    from tokenmill.engine.config import build_pipeline

    cfg = {"input": {"paths": ["unused"]}, "output": {"path": "unused"},
           "stages": [{"type": "rephrase", "backend": "openai", "model": "served",
                       "openai": {"base_url": "http://127.0.0.1:9/v1"}}]}
    pipe = build_pipeline(cfg, check_inputs=False)
    stage = pipe.stages[0].build(pipe.languages)
    stage.setup()
    return stage


def test_engine_failures_become_rejects_even_when_a_whole_batch_failed():
    """Rows the LLM engine failed skip ray.data.llm's postprocess: a batch of only those has no
    generation columns, and each still becomes a reject with the engine's error (Ray Data's error
    column, renamed by the Ray adapter to the contract's LLM_ERROR)."""
    import pyarrow as pa

    from tokenmill.engine.executors.ray.llm import engine_errors
    from tokenmill.engine.stage import LLM_ERROR

    stage = _openai_stage()
    failed = pa.table({"id": ["d1", "d2"], "row_key": ["f:1", "f:2"], "rq_style": ["wikipedia"] * 2,
                       "rq_version": pa.array([1, 1], pa.int32()), "rq_chunk_index": pa.array([0, 1], pa.int32()),
                       "rq_piece": ["x", "y"],
                       "__inference_error__": ["EngineDeadError: boom", "EngineDeadError: boom"]})
    failed = engine_errors(failed)
    assert LLM_ERROR in failed.column_names and "__inference_error__" not in failed.column_names
    rows = stage.documents(failed).to_pylist()
    assert [r["reject_reason"] for r in rows] == ["generation_failed: EngineDeadError: boom"] * 2
    assert [r["row_key"] for r in rows] == ["f:1#rephrase#wikipedia-0", "f:2#rephrase#wikipedia-1"]
    label = stage.report_reason(pa.array([rows[0]["reject_reason"], "too_short", None]))
    assert label.to_pylist() == ["generation_failed", "too_short", None]


class _RefusesBad:
    """A backend whose call fails as a whole when any prompt says BAD (as vLLM does for a prompt
    over max_model_len)."""

    def generate(self, convs, seeds, max_tokens):
        from tokenmill.stages.rephrase.backend import Generation

        if any("BAD" in c[-1]["content"] for c in convs):
            raise ValueError("prompt too long")
        return [Generation("fine " * 20, 5, 20, "stop") for _ in convs]


def test_a_failing_batch_is_retried_request_by_request():
    stage = _openai_stage()
    stage._backend = _RefusesBad()
    convs = [[{"role": "user", "content": t}] for t in ("one", "BAD two", "three")]
    got = stage._generate(convs, [1, 2, 3])
    assert [g.error for g in got] == [None, "ValueError: prompt too long", None]
    assert got[0].text.startswith("fine") and got[1].text is None


def test_a_chunk_s_parts_keep_their_own_decisions(tmp_path):
    """After a generating phase a chunk's parts come with different decisions (the earlier phase's
    parts with the dedup decisions, the generated ones with none): the cache must not mix them."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from tokenmill.engine.jobs import PoolSpec
    from tokenmill.engine.schema import phase_schema
    from tokenmill.engine.worker import StreamWorker

    pq.write_table(pa.table({"row_key": ["f:1"], "reject_reason": ["duplicate_of:x"]}), tmp_path / "d.parquet")
    worker = StreamWorker(PoolSpec(stages=[], languages=None, schema=phase_schema([]), batch_size=10))
    with_dec = {"chunk": 0, "decisions": json.dumps([["exact_dedup", [str(tmp_path / "d.parquet")]]])}
    without = {"chunk": 0, "decisions": json.dumps([])}
    assert worker._chunk_decisions(without) == []
    assert worker._chunk_decisions(with_dec)[0][1].num_rows == 1
    assert worker._chunk_decisions(without) == []
