"""Decoding input files into bytes, noticing damage: compressed streams that are cut short or
corrupt raise ``DamagedInput`` after everything decodable before the damage was handed out.

The standard stream readers end quietly on a truncated file (zstandard's stream reader, fastwarc's
gzip), so a cut file would look whole. Here each codec is fed by hand: a member or frame that has
begun must reach its end (``.eof``) before the file does, several members/frames in a row are
read in turn (concatenated .gz, pbzip2, multi-frame .zst), and the damage's byte offset in the
compressed file goes into the error. ``iter_blocks`` yields decoded blocks of a file,
``iter_lines`` splits them into lines, ``BlockStream`` is a file object over them (for fastwarc).

Memory is bounded whatever the input: no decoder call hands out more than ``BLOCK`` bytes (gzip,
bz2 and xz take an output limit; zstd has none, so ``ZstdPace`` cuts its input at block headers,
each block decoding to at most 128 KiB), so a decompression bomb comes out block by block; and
``iter_lines`` with ``max_line`` streams past a longer line (``Oversized``: its first bytes, its
length and SHA-256) instead of holding it.
"""
from __future__ import annotations

import bz2
import hashlib
import io
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import NamedTuple, Optional, Union

from tokenmill.engine.io.transient import TransientError, open_for_reading

RAW_CHUNK = 1 << 20   # bytes read from the file at a time
FEED = 64 << 10       # compressed bytes given to a decoder at a time
BLOCK = 1 << 20       # the most decoded bytes one decoder call hands out
ZSTD_BLOCK = 128 << 10   # the most bytes one zstd block decodes to (RFC 8878, Block_Maximum_Size)


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
        size, done = fh.size(), 0
        while True:
            chunk = fh.read(RAW_CHUNK)
            if not chunk:
                break
            done += len(chunk)
            yield chunk
    if size is not None and done < size:   # the store ended the body early, without an error
        raise TransientError(f"{path}: the read ended at byte {done} of {size}")


def iter_blocks(path: str) -> Iterator[bytes]:
    """The decoded content of a file, block by block; raises ``DamagedInput`` at damage."""
    codec = codec_of(path)
    if codec is None:
        yield from _raw_chunks(path)
    else:
        yield from _decode(_raw_chunks(path), *codec)


def decoded_outcome(path: str) -> tuple[str, int]:
    """The file decoded again to its end: ("damaged", offset) where decoding fails, else ("end",
    decoded size). Only for a file whose first read stopped on damage (rare): a second read tells
    damage in the file, which repeats, from a read cut short in transit, which does not."""
    size = 0
    try:
        for block in iter_blocks(path):
            size += len(block)
    except DamagedInput as exc:
        return "damaged", exc.offset
    return "end", size


def damage_repeats(path: str, exc: BaseException) -> bool:
    """Whether ``exc``, the damage a read of ``path`` stopped on, is there again on a second read:
    decoding fails at the same offset, or the content ends at the same decoded byte (``exc.at``).
    Other errors come from the bytes themselves and are taken as they are."""
    if isinstance(exc, DamagedInput):
        return decoded_outcome(path) == ("damaged", exc.offset)
    at = getattr(exc, "at", None)
    if isinstance(at, int):
        return decoded_outcome(path) == ("end", at)
    return True


def _decode(chunks: Iterator[bytes], name: str, unit: str, new_decoder: Callable) -> Iterator[bytes]:
    """Feed compressed chunks through one decoder per member/frame, in turn; at the end of the
    file the last one must have ended. Zero bytes between gzip members are padding."""
    dec, start, pos, out_bytes = None, 0, 0, 0   # decoder, where its unit began, bytes fed, bytes out
    pace = ZstdPace() if name == "zstd" else None
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
                if pace is not None:
                    pace.reset()
            piece = view[:pace.limit(view[:FEED])] if pace is not None else view[:FEED]
            try:
                for out in _outputs(dec, name, piece):
                    out_bytes += len(out)
                    yield out
            except Exception as exc:  # zlib.error, ZstdError, OSError, LZMAError: corrupt data
                raise DamagedInput(f"corrupt {name} data at or before byte {pos + len(piece)}, in the {unit} that "
                                   f"starts at byte {start} ({out_bytes} bytes of content before it): {exc}",
                                   start) from None
            used = len(piece) - len(dec.unused_data) if dec.eof else len(piece)
            pos, view = pos + used, view[used:]
            if dec.eof:
                dec = None
    if dec is not None:
        raise DamagedInput(f"{name} data cut short at byte {pos}: the {unit} that starts at byte {start} does not "
                           f"end ({out_bytes} bytes of content before the cut)", pos)


def _outputs(dec, name: str, piece: memoryview) -> Iterator[bytes]:
    """What one piece of compressed input decodes to, in blocks of at most ``BLOCK`` bytes (zstd:
    ``ZstdPace`` sized the piece); it is used up unless the decoder's unit ends in it."""
    if name == "gzip":
        yield from _inflate(dec, piece)
        return
    if name == "zstd":
        out = dec.decompress(piece)
        if out:
            yield out
        return
    out = dec.decompress(piece, BLOCK)   # bz2, xz: the rest of the piece stays inside the decoder
    while True:
        if out:
            yield out
        if dec.eof or dec.needs_input:
            return
        out = dec.decompress(b"", BLOCK)


def _inflate(dec, data) -> Iterator[bytes]:
    """zlib's blocks of ``data``; on corrupt data, what comes before the damage, then the error."""
    while True:
        saved = dec.copy()  # cheap: lets an error keep what came before it
        try:
            out = dec.decompress(data, BLOCK)
        except zlib.error:
            out = _salvage(saved, data)
            if out:
                yield out
            raise
        if out:
            yield out
        data = dec.unconsumed_tail
        if dec.eof or (not data and len(out) < BLOCK):
            return


def _salvage(dec, piece) -> bytes:
    """What a zlib decoder gives for ``piece`` up to the byte where it fails (found by halving
    the input on copies of the decoder), so that corrupt data loses nothing before it. The call
    that failed stopped short of ``BLOCK`` bytes of output, so this is smaller too."""
    out = []
    piece = memoryview(piece)
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


class ZstdPace:
    """How much compressed zstd input one call may take so that it decodes to at most ``BLOCK``
    bytes: python-zstandard's decoder has no output limit, and one 64 KiB piece of a zstd bomb
    decodes to 2 GB. Reads the frame's headers as the bytes go by (RFC 8878: a frame header, then
    blocks, each a 3-byte header and its content, each decoding to at most 128 KiB, then an optional
    checksum; skippable frames are passed whole) and cuts the input before the block that would pass
    the limit, or at the frame's end. Only advice: the decoder, not this, judges the data."""

    BLOCKS = BLOCK // ZSTD_BLOCK

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        """At the start of a frame."""
        self.head = bytearray()   # the header being read (the frame's, then each block's)
        self.in_blocks = False    # past the frame header
        self.skip = 0             # content bytes still to pass
        self.done = False         # at the frame's end
        self.checksum = False

    def limit(self, view: memoryview) -> int:
        """How many bytes of ``view`` to feed now (at least one); they count as fed."""
        if self.done and not self.skip:
            return len(view)   # the decoder goes on where this saw the frame end: no more advice
        at, blocks = 0, 0
        while at < len(view) and not (self.done and not self.skip):
            if self.skip:
                n = min(self.skip, len(view) - at)
                self.skip, at = self.skip - n, at + n
                continue
            if self.in_blocks and not self.head and blocks == self.BLOCKS:
                break
            need = self._need()
            if len(self.head) < need:
                n = min(need - len(self.head), len(view) - at)
                self.head += view[at:at + n]
                at += n
                continue
            blocks += self._parse()
        return max(at, 1)

    def _need(self) -> int:
        """Bytes of the current header (the frame header's length shows in its first five)."""
        h = self.head
        if self.in_blocks:
            return 3
        if len(h) < 4:
            return 4
        if h[3] == 0x18 and h[2] == 0x4D and h[1] == 0x2A and h[0] & 0xF0 == 0x50:
            return 8   # a skippable frame: magic and size
        if len(h) < 5:
            return 5
        fhd = h[4]
        single, fcs = fhd >> 5 & 1, fhd >> 6
        return 5 + (not single) + (0, 1, 2, 4)[fhd & 3] + ((0, 2, 4, 8)[fcs] if fcs or not single else 1)

    def _parse(self) -> int:
        """Take a whole header; 1 if it began a block."""
        h, self.head = bytes(self.head), bytearray()
        if not self.in_blocks:
            if len(h) == 8 and h[3] == 0x18:   # skippable: its content, and the frame is done
                self.skip, self.done = int.from_bytes(h[4:8], "little"), True
            elif h[:4] != b"\x28\xb5\x2f\xfd":
                self.skip, self.done = 1 << 62, True   # not zstd: the decoder will say so
            else:
                self.in_blocks, self.checksum = True, bool(h[4] >> 2 & 1)
            return 0
        header = int.from_bytes(h, "little")
        kind, size = header >> 1 & 3, header >> 3
        self.skip = 1 if kind == 1 else size   # an RLE block holds one byte
        if header & 1:   # the last block
            self.skip += 4 * self.checksum
            self.done = True
        return 1


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


class Oversized(NamedTuple):
    """A line longer than ``iter_lines``'s ``max_line``, streamed past: its first ``head`` bytes,
    and the length and SHA-256 of the whole line (without its ``\\n``)."""
    head: bytes
    nbytes: int
    sha256: str


def iter_lines(blocks: Iterator[bytes], max_line: Optional[int] = None,
               keep: int = 0) -> Iterator[Union[bytes, Oversized]]:
    """Lines of a byte stream, each with its ``\\n`` (the last one may lack it); damage in the
    stream raises ``DamagedInput`` after the last complete line. A line of more than ``max_line``
    bytes (its ``\\n`` not counted) comes as ``Oversized``, keeping its first ``keep`` bytes: it is
    never held whole (the most held is ``max_line`` bytes and one block)."""
    reader = io.BufferedReader(_RawBlocks(blocks), RAW_CHUNK)
    return iter(reader) if max_line is None else _capped_lines(reader.readline, max_line + 1, keep)


def _capped_lines(readline: Callable, limit: int, keep: int) -> Iterator[Union[bytes, Oversized]]:
    while True:
        line = readline(limit)
        if len(line) < limit or line[-1] == 10:   # a whole line (10: "\\n"), or the end
            if not line:
                return
            yield line
        else:
            yield _stream_past(readline, line, keep)


def _stream_past(readline: Callable, first: bytes, keep: int) -> Oversized:
    """The rest of a line whose first bytes were ``first``, read a piece at a time and hashed."""
    digest, n, head = hashlib.sha256(first), len(first), first[:keep]
    piece = first
    while piece[-1] != 10:
        piece = readline(RAW_CHUNK)
        if not piece:
            break
        n += len(piece)
        digest.update(piece if piece[-1] != 10 else memoryview(piece)[:-1])
    return Oversized(head, n - (piece[-1:] == b"\n"), digest.hexdigest())


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
