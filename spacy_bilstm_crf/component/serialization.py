"""The component's saved files: what ``to_disk``/``to_bytes`` write, how they load back.

A saved ``bilstm_crf_ner`` holds ``cfg`` (JSON: settings, labels, table sizes and the
checksum of the weights, see ``integrity``), ``model`` (thinc's bytes of the network,
the character table and lexicon keys included) and ``vocab``. ``cfg`` loads first: the
network is rebuilt for the sizes in it, then the weights are checked against the
checksum and the sizes, and loaded. Pipelines of version 0.1.0 also wrote
``char_table`` and ``lexicon`` as files of their own and no sizes in cfg: their
loaders (``legacy_size_loaders``) take the sizes from those. The functions take the
component (``pipe.BiLSTMCRFNER``) and are called by its methods of the same names.
"""
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Iterable, Optional, Union

import srsly
from spacy import util

from .architectures import build_torch_layer
from .integrity import CHECKSUM_KEY, SIZE_KEYS, check_table_sizes, check_weights, parse_cfg, weights_checksum

if TYPE_CHECKING:
    from ..pipe import BiLSTMCRFNER


def dump(pipe: "BiLSTMCRFNER") -> Dict[str, bytes]:
    """The serialized fields besides the vocab: cfg (with the weights' checksum) and the weights."""
    model_bytes = pipe.model.to_bytes()
    cfg = dict(pipe.cfg)
    # The checksum covers the table sizes too: they are read before the weights.
    cfg.pop(CHECKSUM_KEY, None)
    cfg[CHECKSUM_KEY] = weights_checksum(model_bytes, pipe.labels, str(pipe.cfg["scheme"]), cfg)
    return {"cfg": srsly.json_dumps(cfg).encode("utf8"), "model": model_bytes}


def loaders(pipe: "BiLSTMCRFNER") -> Dict[str, Callable[[bytes, str], None]]:
    """Loaders of the fields besides the vocab, each given the bytes and where they come from.

    cfg loads before the model: the network is rebuilt for the sizes in it, then
    its weights (which include the character table and lexicon keys) are
    checked against cfg's checksum and loaded.
    """
    return {
        "cfg": lambda data, source: load_cfg(pipe, data, source),
        **legacy_size_loaders(pipe),
        "model": lambda data, source: load_model(pipe, data, source),
    }


def load_cfg(pipe: "BiLSTMCRFNER", data: bytes, source: str) -> None:
    """Read cfg: its settings, table sizes and checksum replace the pipe's."""
    cfg = parse_cfg(data, source, pipe.name)
    # The table sizes and checksum come from the loaded cfg (or the legacy fields),
    # never from an earlier initialization of this pipe.
    for key in (*SIZE_KEYS, CHECKSUM_KEY):
        pipe.cfg.pop(key, None)
    pipe.cfg.update(cfg)
    pipe._cfg_source = source  # for errors about cfg found while loading the weights
    if "n_gazetteer_keys" not in cfg:
        # Saved by a version without the gazetteer: its weights have none. spaCy fills
        # the missing ``gazetteer`` setting of its config from the factory's default
        # (on), which would build a network that the weights do not fit.
        pipe.model.attrs["gazetteer"] = False


def legacy_size_loaders(pipe: "BiLSTMCRFNER") -> Dict[str, Callable[[bytes, str], None]]:
    """Pipelines saved by version 0.1.0 also wrote the character table and the lexicon
    keys as fields of their own, and no sizes in cfg: take the sizes from those.
    """

    def set_size(key: str, values: Optional[list]) -> None:
        if key not in pipe.cfg:
            pipe.cfg[key] = None if values is None else len(values)

    return {
        "char_table": lambda b, _: set_size("n_chars", srsly.json_loads(b)),
        "lexicon": lambda b, _: set_size("n_lexicon_keys", srsly.msgpack_loads(b)),
    }


def to_bytes(pipe: "BiLSTMCRFNER", exclude: Iterable[str] = tuple()) -> bytes:
    """Serialize the pipe (cfg, vocab, weights with the character table and lexicon keys)."""
    pipe._validate_serialization_attrs()
    serializers = {key: (lambda data=data: data) for key, data in dump(pipe).items()}
    serializers["vocab"] = lambda: pipe.vocab.to_bytes(exclude=exclude)
    return util.to_bytes(serializers, exclude)


def to_disk(pipe: "BiLSTMCRFNER", path: Union[str, Path], exclude: Iterable[str] = tuple()) -> None:
    """Serialize the pipe to a directory: one file per field."""
    pipe._validate_serialization_attrs()
    writers = {
        key: (lambda p, data=data: Path(p).write_bytes(data)) for key, data in dump(pipe).items()
    }
    writers["vocab"] = lambda p: pipe.vocab.to_disk(p, exclude=exclude)
    util.to_disk(util.ensure_path(path), writers, exclude)


def from_bytes(pipe: "BiLSTMCRFNER", bytes_data: bytes, exclude: Iterable[str] = tuple()) -> "BiLSTMCRFNER":
    """Load the pipe from a bytestring written by ``to_bytes``."""
    pipe._validate_serialization_attrs()
    readers = {key: (lambda b, load=load: load(b, "bytes")) for key, load in loaders(pipe).items()}
    readers["vocab"] = lambda b: pipe.vocab.from_bytes(b, exclude=exclude)
    util.from_bytes(bytes_data, readers, exclude)
    return pipe


def from_disk(pipe: "BiLSTMCRFNER", path: Union[str, Path], exclude: Iterable[str] = tuple()) -> "BiLSTMCRFNER":
    """Load the pipe from a directory written by ``to_disk``."""
    pipe._validate_serialization_attrs()
    path = util.ensure_path(path)
    if not path.is_dir():
        raise ValueError(f"Cannot load '{pipe.name}': directory not found: {path}")
    for required in ("cfg", "model"):
        if required not in exclude and not (path / required).exists():
            raise ValueError(
                f"Cannot load '{pipe.name}' from {path}: the file '{required}' is missing. "
                "Was it saved with nlp.to_disk() by spacy-bilstm-crf?"
            )
    legacy = legacy_size_loaders(pipe)

    def reader(key: str, load: Callable[[bytes, str], None]) -> Callable[[Path], None]:
        def read(p: Path) -> None:
            if key in legacy and not Path(p).exists():  # those exist in 0.1.0 pipelines only
                return
            load(Path(p).read_bytes(), str(p))

        return read

    readers = {key: reader(key, load) for key, load in loaders(pipe).items()}
    readers["vocab"] = lambda p: pipe.vocab.from_disk(p, exclude=exclude)
    util.from_disk(path, readers, exclude)
    return pipe


def load_model(pipe: "BiLSTMCRFNER", data: bytes, source: str) -> None:
    """Check the weights and the table sizes against cfg, then rebuild the torch module
    for its sizes and load them: nothing is allocated for sizes that were not checked.
    """
    check_weights(pipe.cfg, data, source, pipe.name, pipe._cfg_source)
    check_table_sizes(pipe.cfg, data, source, pipe.name, pipe._cfg_source)
    # No sizes: the pipe was saved before initialize(), there is no network yet.
    if "n_chars" in pipe.cfg:
        build_torch_layer(pipe.model, pipe.scheme, *pipe.table_sizes)
    try:
        pipe.model.from_bytes(data)
    except Exception as err:
        raise ValueError(
            f"Cannot load the weights of '{pipe.name}' from {source}: {err}. The file is "
            "corrupt or was saved with a different config (labels, sizes)."
        ) from err
