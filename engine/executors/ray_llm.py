"""A generating stage's LLM-engine step on Ray: Ray Data's ``ray.data.llm`` vLLM processor.

The stage describes the step (``stage.LLMStep``: model, engine arguments, the row functions
around the engine); this module turns it into ``build_processor(vLLMEngineProcessorConfig(...))``,
a Dataset-to-Dataset step whose replicas (``concurrency``), batch size and tensor parallelism come
from the stage's resources. A request that fails in the engine does not end the run
(``should_continue_on_error``): its row comes back with the error, and the stage rejects it.
"""
from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Optional

from ..jobs import PoolSpec
from ..stage import LLMStep, Resources

WRITE_ROWS = 512


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


def processor(step: LLMStep, resources: Resources):
    """The ``ray.data.llm`` processor of a step (Dataset -> Dataset)."""
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
    return build_processor(config, preprocess=step.preprocess, postprocess=step.postprocess)
