"""Input encodings: a byte order mark first, then strict UTF-8, then GB18030, or a named codec.

`scan_source` reads the file once in fixed-size blocks: it computes the file's sha256 and,
where the whole file must decode, runs an incremental strict decoder over the blocks. When
UTF-8 fails and no encoding was named, the decoder restarts from the first byte with
GB18030. Memory stays constant whatever the file size, and a file that decodes in neither
fails with the byte offset of the first invalid byte.
"""

from __future__ import annotations

import codecs
import hashlib
from dataclasses import dataclass
from pathlib import Path

from llmjobs.errors import DecodeError

BLOCK_SIZE = 1 << 20
FALLBACK_ENCODING = "gb18030"

# UTF-32 before UTF-16: the UTF-32 LE mark starts with the UTF-16 LE mark.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

_ENCODING_HINT = (
    "pass --encoding with the file's encoding (for example --encoding gbk, big5 or "
    "shift_jis), or convert the file to UTF-8"
)


@dataclass(frozen=True)
class SourceEncoding:
    """How a file's bytes become text."""

    # A normalised Python codec name such as "utf-8" or "gb18030".
    codec: str
    # Bytes of the byte order mark to skip before decoding.
    bom_length: int = 0
    # How the codec was chosen: "bom", "option", "utf-8" or "fallback".
    chosen_by: str = "utf-8"
    # Set when UTF-8 failed and GB18030 was used, naming the first invalid UTF-8 byte.
    note: str | None = None

    @property
    def ascii_compatible(self) -> bool:
        """True when b"\\n" always ends a line, so lines can be split before decoding."""
        return not self.codec.startswith(("utf-16", "utf-32"))


@dataclass(frozen=True)
class ScannedSource:
    """The result of one pass over a file's bytes."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str
    encoding: SourceEncoding


def normalise_codec(name: str) -> str:
    """Return Python's name for a codec, or raise DecodeError naming the unknown one."""
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        raise DecodeError(f"unknown encoding {name!r}; {_ENCODING_HINT}") from None
    # utf-8-sig and plain utf-8 differ only in the mark, which is skipped separately.
    return "utf-8" if codec == "utf-8-sig" else codec


def sniff_bom(head: bytes) -> tuple[str, int] | None:
    """Return (codec, mark length) when the bytes start with a byte order mark."""
    for mark, codec in _BOMS:
        if head.startswith(mark):
            return codec, len(mark)
    return None


def scan_source(path: Path, encoding: str | None, *, check_decoding: bool) -> ScannedSource:
    """Hash the file and choose its encoding, in one or two constant-memory passes.

    With `check_decoding` false (JSON Lines, where each line is decoded and reported on
    its own) the encoding is the byte order mark's, the named one, or UTF-8.
    """
    with path.open("rb") as handle:
        head = handle.read(4)
    bom = sniff_bom(head)
    named = normalise_codec(encoding) if encoding else None

    if named is not None:
        bom_length = bom[1] if bom is not None and _same_family(bom[0], named) else 0
        chosen = SourceEncoding(named, bom_length, "option")
    elif bom is not None:
        chosen = SourceEncoding(bom[0], bom[1], "bom")
    else:
        chosen = SourceEncoding("utf-8", 0, "utf-8")

    digest, size, failure = _hash_and_check(path, chosen if check_decoding else None)
    if failure is not None:
        if chosen.chosen_by != "utf-8":
            raise _decode_error(path, chosen.codec, failure)
        # Not UTF-8: start again from the first byte with the fallback codec.
        fallback = SourceEncoding(
            FALLBACK_ENCODING, 0, "fallback",
            note=f"{path.name} is not valid UTF-8 (first invalid byte at offset "
                 f"{failure[0]}), so it was decoded as GB18030",
        )
        _digest, _size, second = _hash_and_check(path, fallback, hash_bytes=False)
        if second is not None:
            raise DecodeError(
                f"{path}: cannot decode as UTF-8 (invalid byte {failure[1]} at byte offset "
                f"{failure[0]}) or as GB18030 (invalid byte {second[1]} at byte offset "
                f"{second[0]}); {_ENCODING_HINT}"
            )
        chosen = fallback

    stat = path.stat()
    return ScannedSource(path, size, stat.st_mtime_ns, digest, chosen)


def _same_family(bom_codec: str, named: str) -> bool:
    return named.replace("-le", "").replace("-be", "") == bom_codec.replace("-le", "").replace(
        "-be", ""
    )


def _hash_and_check(
    path: Path, encoding: SourceEncoding | None, *, hash_bytes: bool = True
) -> tuple[str, int, tuple[int, str] | None]:
    """Return (sha256, size, None or (offset, byte) of the first byte that fails to decode)."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder(encoding.codec)("strict") if encoding else None
    failure: tuple[int, str] | None = None
    offset = 0
    with path.open("rb") as handle:
        while True:
            block = handle.read(BLOCK_SIZE)
            if hash_bytes:
                digest.update(block)
            if decoder is not None and failure is None:
                failure = _decode_block(decoder, block, offset, encoding, final=not block)
                if failure is not None and not hash_bytes:
                    break
            offset += len(block)
            if not block:
                break
    return digest.hexdigest(), offset, failure


def _decode_block(
    decoder: codecs.IncrementalDecoder,
    block: bytes,
    offset: int,
    encoding: SourceEncoding | None,
    *,
    final: bool,
) -> tuple[int, str] | None:
    skip = encoding.bom_length if encoding is not None and offset == 0 else 0
    pending = len(decoder.getstate()[0])
    try:
        decoder.decode(block[skip:] if skip else block, final)
    except UnicodeDecodeError as error:
        # error.start counts from the bytes the decoder held back from earlier blocks.
        position = offset + skip - pending + error.start
        bad = error.object[error.start:error.start + 1]
        return position, f"0x{bad.hex()}" if bad else "end of file"
    return None


def _decode_error(path: Path, codec: str, failure: tuple[int, str]) -> DecodeError:
    return DecodeError(
        f"{path}: cannot decode as {codec}: invalid byte {failure[1]} at byte offset "
        f"{failure[0]}; {_ENCODING_HINT}"
    )


