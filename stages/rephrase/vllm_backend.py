"""The ``vllm`` backend in process: ``vllm.LLM.generate`` over a batch of conversations (used by
the Spark executor and a plain loop; on Ray the executor runs vLLM through ``ray.data.llm``
instead, from the stage's ``llm_step``). Each request carries its own seed, so its output does not
depend on which batch it was in."""
from __future__ import annotations

from .backend import Generation, Sampling


class VLLMBackend:
    def __init__(self, model: str, sampling: Sampling, engine_kwargs: dict):
        self.path, self.sampling, self.engine_kwargs = model, sampling, engine_kwargs
        self.llm = None

    def setup(self) -> None:
        from vllm import LLM

        self.llm = LLM(model=self.path, **self.engine_kwargs)

    def generate(self, conversations: list[list[dict]], seeds: list[int], max_tokens: int) -> list[Generation]:
        from vllm import SamplingParams

        s = self.sampling
        params = [SamplingParams(max_tokens=max_tokens, temperature=s.temperature, top_p=s.top_p, seed=seed)
                  for seed in seeds]
        outs = self.llm.chat(conversations, params, use_tqdm=False)
        return [Generation(o.outputs[0].text, len(o.prompt_token_ids or []), len(o.outputs[0].token_ids),
                           o.outputs[0].finish_reason) for o in outs]
