"""``tokenmill mix``: from curated outputs to training data.

A mix selects documents from curated tokenmill outputs (filters by language, quality and folder),
weights and upsamples them to token budgets, tokenizes them on an executor and writes Megatron
indexed datasets (``.bin`` + ``.idx``) in one seeded global order. The modules, in the order a mix
runs: ``config`` (the YAML), ``sources`` (files of each source, checked before any work),
``repeats`` (upsampling curves and the deterministic budget rule), ``budget`` (the metadata pass
and the solved plan), ``tokens`` (tokenize and key each repeat), ``megatron`` (the shard format),
``run`` (the phases on an executor, durability, the manifest), ``progress`` (a line every 15 s),
``report`` (mix.json / mix.html) and ``cli``.
"""
