"""Baidu's full LAC 2.1.2 (Apache-2.0), read straight out of its sdist ``LAC-2.1.2.tar.gz``.

A training-time asset, like the CLUENER data: only the files of ``LAC/lac_model/``
are read (the Paddle tensors and four dictionaries), streamed from the archive;
nothing is extracted, ``LAC`` is never imported and its ``setup.py`` never runs.

What the archive holds (``LAC-2.1.2/LAC/lac_model/``):

- ``model/word_emb`` [58224, 128]: rows 0..8222 single characters, 8223..58222
  multi-character words (and digit/letter strings such as ``2019``), 58223 ``OOV``;
- ``model/fc_0..3.{w,b}_0``, ``gru_0..3.{w,b}_0``: 2 × BiGRU(128), laid out as
  LAC-small's (``assets.load_lac_encoder``); ``fc_4.{w,b}_0`` [256, 49], [49]: the
  output layer; ``crfw`` [51, 49]: start row, end row, then [from, to];
- ``conf/word.dic`` ``id<TAB>entry`` (entry 0 is a space); ``conf/tag.dic``
  ``id<TAB>name``, 57 names on 49 ids (``PER-B`` shares 16 with ``nr-B``; LAC reads
  the last name of an id); ``conf/q2b.dic`` ``from<TAB>to``, 5,906 single characters
  to the form the table keeps (``word_vectors.py``); ``conf/small_seg.dic``
  ``word<SPACE>count``, 95,390 words of 2 or 3 characters.

The sdist has no LICENSE file: its licence is stated in PKG-INFO (``License:
Apache 2.0``) and in each source file's header.
"""
import hashlib
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy

from .paddle_files import PaddleFileError, read_paddle_tensor

SDIST_NAME = "LAC-2.1.2.tar.gz"
SDIST_SHA256 = "22fcde0d5082d2044205ea6f6a7a9cd1f0d63e7b21b2dd5c9c73f27e7c0a3ef1"
SDIST_SIZE = 64_818_010
MODEL_DIR = "LAC-2.1.2/LAC/lac_model/"
EMBED_DIM = 128
HIDDEN = 128


class SdistError(ValueError):
    """A LAC sdist that is missing, corrupt, truncated or not the expected release."""


def tensor_shapes(vocab_size: int = 58224, n_tags: int = 49) -> Dict[str, Tuple[int, ...]]:
    """RETURNS (Dict[str, Tuple[int, ...]]): the file name and shape of each tensor LAC-full uses.

    fc_0/gru_0 and fc_1/gru_1 are the first BiGRU layer (forward, reverse), fc_2/fc_3
    the second; the input projections' biases are 1-D, the GRUs' [1, 3H].
    """
    shapes: Dict[str, Tuple[int, ...]] = {"word_emb": (vocab_size, EMBED_DIM)}
    for n in range(4):
        shapes[f"fc_{n}.w_0"] = (EMBED_DIM if n < 2 else 2 * HIDDEN, 3 * HIDDEN)
        shapes[f"fc_{n}.b_0"] = (3 * HIDDEN,)
        shapes[f"gru_{n}.w_0"] = (HIDDEN, 3 * HIDDEN)
        shapes[f"gru_{n}.b_0"] = (1, 3 * HIDDEN)
    shapes["fc_4.w_0"] = (2 * HIDDEN, n_tags)
    shapes["fc_4.b_0"] = (n_tags,)
    shapes["crfw"] = (n_tags + 2, n_tags)
    return shapes


DICTIONARIES = ("word.dic", "tag.dic", "q2b.dic", "small_seg.dic")


@dataclass
class LACFullFiles:
    """What LAC-full's network and segmenter need from the sdist.

    tensors (Dict[str, numpy.ndarray]): float32 arrays by file name (``tensor_shapes``).
    vocab (Dict[str, int]): ``word.dic``: entry → embedding row (``"OOV"`` included).
    tags (Dict[str, int]): ``tag.dic``: tag name → id (aliases share an id).
    q2b (Dict[str, str]): ``q2b.dic``: character → replacement character.
    seg_counts (Dict[str, int]): ``small_seg.dic``: segmenter word → count.
    """

    tensors: Dict[str, numpy.ndarray]
    vocab: Dict[str, int]
    tags: Dict[str, int]
    q2b: Dict[str, str]
    seg_counts: Dict[str, int]

    @property
    def oov_id(self) -> int:
        """RETURNS (int): the embedding row of characters LAC lacks."""
        return self.vocab["OOV"]

    def tag_names(self) -> List[str]:
        """RETURNS (List[str]): a name per tag id, the last one ``tag.dic`` gives it (as LAC reads it)."""
        names = [""] * (max(self.tags.values()) + 1)
        for name, index in self.tags.items():
            names[index] = name
        return names


def sha256_of(path: Path) -> str:
    """RETURNS (str): the hex SHA-256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sdist(path: Union[str, Path], sha256: str = SDIST_SHA256) -> Path:
    """Check that a file is the expected LAC sdist.

    path (Union[str, Path]): The ``LAC-2.1.2.tar.gz`` file.
    sha256 (str): Its expected hex SHA-256.
    RETURNS (Path): The path.
    RAISES (SdistError): The file is missing or its checksum differs.
    """
    path = Path(path)
    if not path.is_file():
        raise SdistError(f"LAC sdist not found: {path} (fetch it with fetch_lac_sdist, or pass its path)")
    found = sha256_of(path)
    if found != sha256:
        raise SdistError(
            f"{path}: SHA-256 {found} ({path.stat().st_size:,} bytes) is not the expected {sha256} "
            f"of {SDIST_NAME} ({SDIST_SIZE:,} bytes): a truncated download or another release"
        )
    return path


def read_lac_full(path: Union[str, Path], sha256: str = SDIST_SHA256) -> LACFullFiles:
    """Read LAC-full's model files out of its sdist, checksum first.

    path (Union[str, Path]): The ``LAC-2.1.2.tar.gz`` file.
    sha256 (str): Its expected hex SHA-256 (tests pass their synthetic archive's).
    RETURNS (LACFullFiles): The tensors and dictionaries.
    RAISES (SdistError): A wrong checksum, an unreadable archive or a missing file.
    RAISES (PaddleFileError): A corrupt tensor or dictionary (named as ``archive:member``).
    """
    path = check_sdist(path, sha256)
    raw = _read_members(path)
    vocab = parse_id_dic(raw["conf/word.dic"], f"{path}:{MODEL_DIR}conf/word.dic")
    tags = parse_id_dic(raw["conf/tag.dic"], f"{path}:{MODEL_DIR}conf/tag.dic")
    if "OOV" not in vocab:
        raise PaddleFileError(f"{path}:{MODEL_DIR}conf/word.dic: no OOV entry")
    shapes = tensor_shapes(max(vocab.values()) + 1, max(tags.values()) + 1)
    tensors = _parse_tensors(path, raw, shapes)
    return LACFullFiles(
        tensors=tensors,
        vocab=vocab,
        tags=tags,
        q2b=parse_q2b(raw["conf/q2b.dic"], f"{path}:{MODEL_DIR}conf/q2b.dic"),
        seg_counts=parse_seg_dic(raw["conf/small_seg.dic"], f"{path}:{MODEL_DIR}conf/small_seg.dic"),
    )


def _wanted_members() -> List[str]:
    return [f"model/{name}" for name in tensor_shapes()] + [f"conf/{name}" for name in DICTIONARIES]


def _read_members(path: Path) -> Dict[str, bytes]:
    """The wanted members' bytes, by path under ``MODEL_DIR``: the archive is streamed once."""
    wanted = set(_wanted_members())
    found: Dict[str, bytes] = {}
    try:
        # "r|gz": a stream, no index of the 64 MB archive; members are skipped unread.
        with tarfile.open(path, mode="r|gz") as archive:
            for member in archive:
                name = member.name[len(MODEL_DIR) :] if member.name.startswith(MODEL_DIR) else None
                if name in wanted and member.isfile():
                    handle = archive.extractfile(member)
                    assert handle is not None
                    found[name] = handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise SdistError(f"{path}: not a readable tar.gz archive (truncated or corrupt): {err}") from err
    missing = sorted(wanted - set(found))
    if missing:
        raise SdistError(f"{path}: the archive lacks {', '.join(MODEL_DIR + m for m in missing)}")
    return found


def _parse_tensors(path: Path, raw: Dict[str, bytes], shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, numpy.ndarray]:
    """Each tensor through the Paddle reader, which reads files: each member is written
    to a temporary file of its own name, and errors name the archive's member instead.
    """
    tensors: Dict[str, numpy.ndarray] = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, shape in shapes.items():
            member = f"{path}:{MODEL_DIR}model/{name}"
            temporary = Path(folder) / name
            temporary.write_bytes(raw[f"model/{name}"])
            try:
                array = read_paddle_tensor(temporary)
            except PaddleFileError as err:
                raise PaddleFileError(str(err).replace(str(temporary), member)) from None
            finally:
                temporary.unlink()
            if tuple(array.shape) != shape:
                raise PaddleFileError(f"{member}: expected shape {shape}, found {tuple(array.shape)}")
            tensors[name] = numpy.ascontiguousarray(array, dtype="float32")
    return tensors


def _lines(data: bytes, where: str) -> List[str]:
    try:
        text = data.decode("utf8")
    except UnicodeDecodeError as err:
        raise PaddleFileError(f"{where}: not UTF-8 ({err})") from None
    # Only "\n" ends a line (LAC reads them so): an entry may be a space or another separator.
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def parse_id_dic(data: bytes, where: str) -> Dict[str, int]:
    """``word.dic`` / ``tag.dic``: one ``id<TAB>entry`` per line.

    where (str): The file, for errors. RETURNS (Dict[str, int]): entry → id.
    """
    result: Dict[str, int] = {}
    for number, line in enumerate(_lines(data, where), 1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].isdigit() or not parts[1]:
            raise PaddleFileError(f"{where}, line {number}: expected 'id<TAB>entry', got {line!r}")
        result[parts[1]] = int(parts[0])
    if not result:
        raise PaddleFileError(f"{where}: no entries")
    return result


def parse_q2b(data: bytes, where: str) -> Dict[str, str]:
    """``q2b.dic``: one ``from<TAB>to`` per line. RETURNS (Dict[str, str]): from → to."""
    result: Dict[str, str] = {}
    for number, line in enumerate(_lines(data, where), 1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise PaddleFileError(f"{where}, line {number}: expected 'from<TAB>to', got {line!r}")
        result[parts[0]] = parts[1]
    return result


def parse_seg_dic(data: bytes, where: str) -> Dict[str, int]:
    """``small_seg.dic``: one ``word<SPACE>count`` per line. RETURNS (Dict[str, int]): word → count."""
    result: Dict[str, int] = {}
    for number, line in enumerate(_lines(data, where), 1):
        if not line.strip():
            continue
        parts = line.strip().split(" ")
        if len(parts) != 2 or not parts[1].isdigit():
            raise PaddleFileError(f"{where}, line {number}: expected 'word<SPACE>count', got {line!r}")
        result[parts[0]] = int(parts[1])
    return result
