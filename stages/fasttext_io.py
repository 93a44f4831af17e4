"""What the fastText stages (langid, quality_fasttext) share: a local copy of a model kept on an
object store, and texts as the one line fastText reads."""
from __future__ import annotations

import os
import tempfile

import pyarrow as pa
import pyarrow.compute as pc


def local_copy(path: str) -> str:
    """A local path for ``path`` (object-store files and folders are copied once to a temporary folder)."""
    if "://" not in path or path.startswith("file://"):
        return path.removeprefix("file://")
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    local = os.path.join(tempfile.mkdtemp(prefix="tokenmill-model-"), os.path.basename(root.rstrip("/")))
    fs.get(root, local, recursive=fs.isdir(root))
    return local


def one_line(texts: pa.Array) -> pa.Array:
    """Texts as fastText reads them: one line, newlines and tabs as spaces (null: empty)."""
    return pc.replace_substring_regex(pc.fill_null(texts, ""), r"[\r\n\t]+", " ")
