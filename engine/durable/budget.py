"""The token budget of a generating phase: generation stops once the kept new rows hold
``limit`` tokens. The phase's parts arrive in input order; the one that reaches the budget is cut
after the row that reaches it, so the output is the shortest prefix of the generations, in input
order, that holds the budget, whatever the batches were. Each committed chunk records its tokens
(``_emitted.json``), so a resumed run counts what is already written."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc

from tokenmill.engine.io.storage import Storage
from tokenmill.engine.io.writers import write_table
from tokenmill.engine.schema import live_mask
from tokenmill.engine.worker import read_parquet_file

TOKENS_FILE = "_emitted.json"


@dataclass
class Budget:
    limit: int
    used: int = 0

    @property
    def left(self) -> int:
        return self.limit - self.used


def live_tokens(table) -> np.ndarray:
    """Tokens of each row that counts against the budget (rejected rows count 0)."""
    tokens = pc.fill_null(table["num_tokens"], 0).to_numpy(zero_copy_only=False)
    return np.where(live_mask(table).to_numpy(zero_copy_only=False), tokens, 0)


def cut_to_budget(store: Storage, path: str, left: int) -> tuple[int, int]:
    """Rewrite the part at ``path`` with its rows up to the one where its live tokens reach
    ``left``; returns (rows, tokens) kept."""
    url = store.url(path)
    table = read_parquet_file(url)
    cum = np.cumsum(live_tokens(table))
    end = int(np.searchsorted(cum, left, side="left")) + 1   # the row that reaches the budget, included
    table = table.slice(0, min(end, table.num_rows))
    write_table(Storage(url), Storage(url).root, table, "zstd")
    return table.num_rows, int(cum[min(end, len(cum)) - 1]) if len(cum) else 0
