"""What happens to a generation before it becomes a synthetic document: a leading preamble
("Here is a paraphrased version:") is stripped; an output that is too short, was cut off by the
token limit, or mostly repeats its prompt is rejected with a reason; a ``split: qa`` style's
output is cut into one record per question-and-answer pair."""
from __future__ import annotations

import re
from typing import Optional

_PREAMBLE = re.compile(
    r"^\s*(?:sure[,!.]?\s*)?(?:here(?:'s| is| are)\b[^\n]{0,80}?:|certainly[^\n]{0,60}?:|"
    r"(?:the )?(?:rewritten|paraphrased|rephrased) (?:text|version|article)[^\n]{0,40}?:)\s*",
    re.IGNORECASE)
_QA = re.compile(r"(?:^|\n)\s*(?:\*\*)?(?:Q(?:uestion)?)\s*\d*\s*[:.](?:\*\*)?\s*(.+?)\s*\n\s*(?:\*\*)?"
                 r"(?:A(?:nswer)?)\s*\d*\s*[:.](?:\*\*)?\s*(.+?)(?=\n\s*(?:\*\*)?Q(?:uestion)?\s*\d*\s*[:.]|\Z)",
                 re.IGNORECASE | re.DOTALL)


def strip_preamble(text: str) -> str:
    """The output without a leading "Here is ...:" line or its like."""
    return _PREAMBLE.sub("", text, count=1).strip()


def _shingles(text: str, n: int = 8) -> set:
    words = text.lower().split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))} if words else set()


def copy_share(output: str, source: str) -> float:
    """Share of the output's word 8-grams that appear in the source (1.0: a copy)."""
    out = _shingles(output)
    return len(out & _shingles(source)) / len(out) if out else 0.0


def reject_reason(output: str, source: str, finish_reason: Optional[str], min_chars: int = 50,
                  max_copy: float = 0.9) -> Optional[str]:
    """Why a generation is not kept, or None."""
    if finish_reason == "length":
        return "truncated"
    if len(output.strip()) < min_chars:
        return "too_short"
    if copy_share(output, source) >= max_copy:
        return "repeats_prompt"
    return None


def qa_pairs(text: str) -> list[str]:
    """One "Question: ... / Answer: ..." record per pair found (none: the text is not QA)."""
    return [f"Question: {q.strip()}\nAnswer: {a.strip()}" for q, a in _QA.findall(text) if q.strip() and a.strip()]
