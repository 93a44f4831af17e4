"""Decoding input files into bytes, noticing damage: compressed streams that are cut short or
corrupt raise ``DamagedInput`` after everything decodable before the damage was handed out.

The standard stream readers end quietly on a truncated file (zstandard's stream reader, fastwarc's
gzip), so a cut file would look whole. Here each codec is fed by hand: a member or frame that has
begun must reach its end (``.eof``) before the file does, several members/frames in a row are
read in turn (concatenated .gz, pbzip2, multi-frame .zst), and the damage's byte offset in the
compressed file goes into the error. ``iter_blocks`` yields decoded blocks of a file,
``iter_lines`` splits them into lines, ``BlockStream`` is a file object over them (for fastwarc).
"""
from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import Optional

from tokenmill.engine.io.transient import open_for_reading

RAW_CHUNK = 1 << 20   # bytes read from the file at a time
FEED = 64 << 10       # compressed bytes given to a decoder at a time: bounds each decoded block


class DamagedInput(Exception):
    """A compressed file is cut short or corrupt; ``offset`` is where, in compressed bytes."""

    def __init__(self, message: str, offset: int):
        super().__init__(message)
        self.offset = offset


def _zstd():
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


#: file suffix -> (codec, what one unit of it is called, new decoder: decompress(), eof, unused_data)
CODECS: dict[str, tuple[str, str, Callable]] = {
    ".gz": ("gzip", "member", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
    ".zst": ("zstd", "frame", _zstd),
    ".zstd": ("zstd", "frame", _zstd),
    ".bz2": ("bz2", "stream", bz2.BZ2Decompressor),
    ".xz": ("xz", "stream", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
}


def codec_of(path: str) -> Optional[tuple[str, str, Callable]]:
    """The codec a file's name asks for, or None for plain bytes."""
    name = path.lower()
    return next((c for ext, c in CODECS.items() if name.endswith(ext)), None)


def _raw_chunks(path: str) -> Iterator[bytes]:
    with open_for_reading(path) as fh:   # a transient fault mid-file: reopened at the same offset
        while True:
            chunk = fh.read(RAW_CHUNK)
            if not chunk:
                return
            yield chunk


def iter_blocks(path: str) -> Iterator[bytes]:
    """The decoded content of a file, block by block; raises ``DamagedInput`` at damage."""
    codec = codec_of(path)
    if codec is None:
        yield from _raw_chunks(path)
    else:
        yield from _decode(_raw_chunks(path), *codec)


def _decode(chunks: Iterator[bytes], name: str, unit: str, new_decoder: Callable) -> Iterator[bytes]:
    """Feed compressed chunks through one decoder per member/frame, in turn; at the end of the
    file the last one must have ended. Zero bytes between gzip members are padding."""
    dec, start, pos, out_bytes = None, 0, 0, 0   # decoder, where its unit began, bytes fed, bytes out
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            if dec is None:
                if name == "gzip" and view[0] == 0:  # zero padding after a member is allowed (as in gzip(1))
                    skip = len(view) - len(bytes(view).lstrip(b"\0"))
                    pos, view = pos + skip, view[skip:]
                    if not view:
                        break
                dec, start = new_decoder(), pos
            piece = view[:FEED]
            saved = dec.copy() if name == "gzip" else None  # cheap: lets an error keep what came before it
            try:
                out = dec.decompress(piece)
            except Exception as exc:  # zlib.error, ZstdError, OSError, LZMAError: corrupt data
                if saved is not None:
                    out = _salvage(saved, piece)
                    out_bytes += len(out)
                    if out:
                        yield out
                raise DamagedInput(f"corrupt {name} data at or before byte {pos + len(piece)}, in the {unit} that "
                                   f"starts at byte {start} ({out_bytes} bytes of content before it): {exc}",
                                   start) from None
            if out:
                out_bytes += len(out)
                yield out
            used = len(piece) - len(dec.unused_data) if dec.eof else len(piece)
            pos, view = pos + used, view[used:]
            if dec.eof:
                dec = None
    if dec is not None:
        raise DamagedInput(f"{name} data cut short at byte {pos}: the {unit} that starts at byte {start} does not "
                           f"end ({out_bytes} bytes of content before the cut)", pos)


def _salvage(dec, piece: memoryview) -> bytes:
    """What a zlib decoder gives for ``piece`` up to the byte where it fails (found by halving
    the input on copies of the decoder), so that corrupt data loses nothing before it."""
    out = []
    while piece:
        half = piece[:max(1, len(piece) // 2)]
        trial = dec.copy()
        try:
            out.append(trial.decompress(half))
        except zlib.error:
            if len(half) == 1:
                break
            piece = half  # the damage is in this half
            continue
        dec, piece = trial, piece[len(half):]
    return b"".join(out)


class _RawBlocks(io.RawIOBase):
    """Decoded blocks as a raw stream, so that ``io.BufferedReader`` splits the lines (in C, about
    twice as fast as splitting blocks in Python). It counts the bytes handed out after the last
    newline, so that damage can say how much of a partial line it dropped."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._block, self._at = b"", 0
        self._partial = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        while self._at >= len(self._block):
            try:
                block = next(self._blocks, None)
            except DamagedInput as exc:
                if self._partial:
                    exc.args = (f"{exc}; a partial line of {self._partial} bytes before it was dropped",)
                raise
            if block is None:
                return 0
            self._block, self._at = block, 0
        n = min(len(buf), len(self._block) - self._at)
        buf[:n] = memoryview(self._block)[self._at:self._at + n]
        newline = self._block.rfind(b"\n", self._at, self._at + n)
        self._partial = self._partial + n if newline < 0 else self._at + n - newline - 1
        self._at += n
        return n


def iter_lines(blocks: Iterator[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream, each with its ``\\n`` (the last one may lack it); damage in the
    stream raises ``DamagedInput`` after the last complete line."""
    return iter(io.BufferedReader(_RawBlocks(blocks), RAW_CHUNK))


class BlockStream:
    """A read-only binary file object over decoded blocks (what fastwarc reads from). It counts
    the bytes it handed out and keeps the last four, so a reader can tell where the content
    ended; damage raises ``DamagedInput`` from ``read``."""

    def __init__(self, blocks: Iterator[bytes]):
        self._blocks = blocks
        self._buf = memoryview(b"")
        self.pos = 0
        self.tail = b""

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            out = bytes(self._buf) + b"".join(self._blocks)
            self._buf = memoryview(b"")
        else:
            while not self._buf:
                block = next(self._blocks, None)
                if block is None:
                    return b""
                self._buf = memoryview(block)
            out = bytes(self._buf[:size])
            self._buf = self._buf[size:]
        self.pos += len(out)
        self.tail = (self.tail + out[-4:])[-4:]
        return out

    def tell(self) -> int:
        return self.pos

    def readable(self) -> bool:
        return True
