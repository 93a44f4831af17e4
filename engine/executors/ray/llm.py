"""A generating stage's LLM-engine step on Ray: Ray Data's ``ray.data.llm`` vLLM processor.

The stage describes the step (``stage.LLMStep``: model, engine arguments, the row functions
around the engine); this module turns it into ``build_processor(vLLMEngineProcessorConfig(...))``,
a Dataset-to-Dataset step whose replicas (``concurrency``), batch size and tensor parallelism come
from the stage's resources. A request that fails in the engine does not end the run
(``should_continue_on_error``): its row comes back with Ray Data's error column, which this adapter
renames to the contract's ``LLM_ERROR``, and the stage rejects it. The engine's chunk column rides
along each request (the stage's ``postprocess`` never sees it).
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Optional

import pyarrow as pa

from tokenmill.engine.jobs import PoolSpec
from tokenmill.engine.schema import CHUNK
from tokenmill.engine.stage import LLM_ERROR, LLMStep, Resources

WRITE_ROWS = 512
#: the column Ray Data's LLM processor gives a request its engine failed
RAY_ERROR = "__inference_error__"


def llm_step_of(pool: PoolSpec) -> Optional[LLMStep]:
    """The LLM-engine step of a pool that is one generating stage whose backend has one."""
    if len(pool.stages) != 1 or not pool.stages[0].generates:
        return None
    return pool.stages[0].build(pool.languages).llm_step()


def split_pool(pool: PoolSpec) -> tuple[PoolSpec, PoolSpec]:
    """The CPU pools on either side of the engine: read + requests, and documents + write."""
    r = pool.resources
    cpu = Resources(num_cpus=1, concurrency=max(1, r.concurrency), batch_size=r.batch_size)
    before = replace(pool, llm_part="requests", sink_url=None, resources=cpu, key=uuid.uuid4().hex)
    # the writing half gathers larger batches: one part file per engine batch would be many small files
    after = replace(pool, llm_part="documents", reads=False, key=uuid.uuid4().hex,
                    resources=cpu.model_copy(update={"batch_size": max(r.batch_size, WRITE_ROWS)}))
    return before, after


#: the first Ray whose ``ray.data.llm`` takes every argument below (log_engine_metrics: 2.55)
LLM_MIN_RAY = (2, 55)


def processor(step: LLMStep, resources: Resources):
    """The ``ray.data.llm`` processor of a step (Dataset -> Dataset)."""
    import ray

    if tuple(int(x) for x in ray.__version__.split(".")[:2]) < LLM_MIN_RAY:
        raise RuntimeError(f"an LLM step on Ray (the rephrase stage's vllm backend) needs ray>=2.55 for ray.data.llm; "
                           f"this is ray {ray.__version__}: pip install 'ray[data,llm]>=2.55'")
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    config = vLLMEngineProcessorConfig(
        model_source=step.model,
        engine_kwargs={"tensor_parallel_size": resources.tensor_parallel_size, **step.engine_kwargs},
        batch_size=resources.batch_size, concurrency=resources.concurrency,
        runtime_env={"env_vars": dict(step.env)} if step.env else None,
        log_engine_metrics=False, should_continue_on_error=True,
        # the engine tokenizes prompts and detokenizes outputs in its own process, as plain LLM.chat
        # does; Ray Data's separate tokenizer and detokenizer actor pools would redo that work
        tokenize_stage=False, detokenize_stage=False)
    return build_processor(config, preprocess=step.preprocess, postprocess=partial(_carry_chunk, step.postprocess))


def _carry_chunk(postprocess: Callable[[dict], dict], row: dict) -> dict:
    return {**postprocess(row), CHUNK: row.get(CHUNK)}


def engine_errors(batch: pa.Table) -> pa.Table:
    """An LLM processor's output with Ray Data's error column named as the Stage contract says."""
    if RAY_ERROR in batch.column_names:
        batch = batch.rename_columns([LLM_ERROR if c == RAY_ERROR else c for c in batch.column_names])
    return batch
