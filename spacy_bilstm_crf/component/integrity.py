"""Checks on a saved pipe: the weights, labels and table sizes are the ones saved, cfg is
well-formed.

A flipped block in a weights file can still load (the tensor shapes are intact)
and silently change every prediction; a label renamed in ``cfg`` silently
relabels entities; a table size edited in ``cfg`` makes the network allocate
whatever it says before the weights can disagree. So ``cfg`` holds a SHA-256 of
the serialized weights together with the label set, the tag scheme and (since the
``sha256-v2:`` checksums) the table sizes, written at save time and checked at load,
before the network is built.

Which pipes have no checksum: those saved before checksums existed (version 0.1.0
before weights were checksummed). Their cfg has no ``n_gazetteer_keys`` either: that
key came later and every version that writes it writes a checksum. So a cfg with
``n_gazetteer_keys`` and no checksum had its checksum removed, and is refused; one
without both loads with a warning (its weights cannot be verified) until it is saved
again. The checksum guards against corruption and edits by mistake, not against
whoever rewrites both files on purpose (anyone can compute a SHA-256): what keeps a
crafted weights file from running code is that the weights are only ever read with
``weights_only=True`` (``architectures.deserialize_weights``).
"""
import hashlib
import json
import warnings
from typing import Dict, List, Mapping, Optional, Sequence

CHECKSUM_KEY = "checksum"
# The table sizes that cfg holds and the network is built with.
SIZE_KEYS = ("n_chars", "n_lexicon_keys", "n_gazetteer_keys", "n_lexicon_vectors")
# Sizes added after the v2 checksum: covered when set, left out when null, so that the
# checksums of pipelines saved before them stay valid.
_LATER_SIZE_KEYS = ("n_lexicon_vectors",)
# Checksums of the weights, labels and scheme (written before the sizes were covered)...
_V1_PREFIX = "sha256:"
# ...and of those and the table sizes (written now).
_V2_PREFIX = "sha256-v2:"
# Every table of a size in cfg has an int64 buffer of at least that many entries in
# the weights (``char_table``, the lexicon's and the gazetteer's ``keys``), or one of
# more bytes per entry (the lexicon's ``word_vectors``: 128 float16 per row).
_BYTES_PER_ENTRY = 8


def weights_checksum(
    model_bytes: bytes, labels: Sequence[str], scheme: str, sizes: Optional[Mapping[str, object]] = None
) -> str:
    """The checksum of serialized weights, the tags they were trained for and, when
    given, the table sizes the network is built with.

    model_bytes (bytes): The serialized model (``Model.to_bytes``).
    labels (Sequence[str]): The entity labels, in order.
    scheme (str): The tag scheme.
    sizes (Optional[Mapping[str, object]]): cfg, or any mapping with the keys of
        ``SIZE_KEYS`` (a missing key counts as null). None gives the checksum that
        pipes saved before the sizes were covered hold (``"sha256:"``).
    RETURNS (str): ``"sha256-v2:"`` (with sizes) or ``"sha256:"`` and the hex digest.
    """
    content: Dict[str, object] = {"labels": list(labels), "scheme": scheme}
    if sizes is not None:
        content["sizes"] = {
            key: sizes.get(key)
            for key in SIZE_KEYS
            if key not in _LATER_SIZE_KEYS or sizes.get(key) is not None
        }
    digest = hashlib.sha256(model_bytes)
    digest.update(json.dumps(content, ensure_ascii=False).encode("utf8"))
    return (_V1_PREFIX if sizes is None else _V2_PREFIX) + digest.hexdigest()


def check_weights(
    cfg: Dict[str, object], model_bytes: bytes, source: str, name: str, cfg_source: str = "cfg"
) -> None:
    """Raise if the weights, labels or table sizes differ from those the checksum in
    ``cfg`` was made of, or if cfg's checksum was removed; warn for a pipe saved before
    checksums existed (see the module's docstring).

    cfg (Dict[str, object]): The pipe's loaded cfg.
    model_bytes (bytes): The serialized model about to be loaded.
    source (str): Where the weights come from (a file path, or "bytes"), for the error.
    name (str): The component's name, for the error.
    cfg_source (str): Where cfg comes from, for the error.
    """
    expected = cfg.get(CHECKSUM_KEY)
    if expected is None:
        _check_unchecksummed(cfg, cfg_source, name)
        return
    labels, scheme = cfg["labels"], str(cfg["scheme"])
    assert isinstance(expected, str)  # parse_cfg checked it
    if expected.startswith(_V2_PREFIX):
        found = weights_checksum(model_bytes, labels, scheme, cfg)  # type: ignore[arg-type]
    elif expected.startswith(_V1_PREFIX):
        found = weights_checksum(model_bytes, labels, scheme)  # type: ignore[arg-type]
    else:
        raise ValueError(
            f"Cannot load '{name}': the '{CHECKSUM_KEY}' in {cfg_source} is of an unknown kind "
            f"({expected[:40]!r}): it should start with '{_V2_PREFIX}' or '{_V1_PREFIX}'. Was it "
            "saved by a newer spacy-bilstm-crf, or edited?"
        )
    if found != expected:
        raise ValueError(
            f"Cannot load the weights of '{name}' from {source}: they do not match the "
            f"checksum saved with them in {cfg_source} ({expected}, found {found}). The weights "
            "file is corrupt or was replaced, or cfg's labels or scheme were edited, or its table "
            f"sizes ({', '.join(SIZE_KEYS)}). Save the pipeline again from its original, or "
            "retrain it."
        )


def _check_unchecksummed(cfg: Dict[str, object], cfg_source: str, name: str) -> None:
    """Refuse a cfg whose checksum was removed; warn for one saved before checksums."""
    if "n_gazetteer_keys" in cfg:
        raise ValueError(
            f"Cannot load '{name}': {cfg_source} has no '{CHECKSUM_KEY}', although it was saved "
            "by a version that always writes one (it has 'n_gazetteer_keys'): the key was "
            "removed, so the weights cannot be verified. Restore the pipeline from its "
            "original, or retrain it."
        )
    warnings.warn(
        f"'{name}': {cfg_source} has no '{CHECKSUM_KEY}': the pipeline was saved before "
        "spacy-bilstm-crf checksummed its weights (or the key was removed), so its weights, "
        "labels and table sizes are NOT verified. If you trust it, save it again with "
        "nlp.to_disk() to add a checksum.",
        UserWarning,
        stacklevel=2,
    )


def check_table_sizes(
    cfg: Dict[str, object], model_bytes: bytes, source: str, name: str, cfg_source: str = "cfg"
) -> None:
    """Raise before the network is built if cfg's table sizes cannot be those of the weights.

    A size sets how much the network allocates before its weights are loaded, and
    the checksums of older pipes do not cover it: every table of a size has an int64
    buffer of at least that many entries in the weights, so the sizes together can
    never exceed the weights file's bytes / 8.

    cfg (Dict[str, object]): The pipe's loaded cfg.
    model_bytes (bytes): The serialized model about to be loaded.
    source (str): Where the weights come from, for the error.
    name (str): The component's name, for the error.
    cfg_source (str): Where cfg comes from, for the error.
    """
    most = len(model_bytes) // _BYTES_PER_ENTRY
    total = 0
    for key in SIZE_KEYS:
        value = cfg.get(key)
        if value is None:
            continue
        total += int(value)  # type: ignore[call-overload]
        if total > most:
            raise ValueError(
                f"Cannot load '{name}': {cfg_source} says '{key}' = {value}, more table entries "
                f"than the weights in {source} ({len(model_bytes)} bytes) can hold (at most "
                f"{most} in all): cfg was edited or belongs to other weights. Restore the "
                "pipeline from its original, or retrain it."
            )


# cfg fields: the types each may hold (None where the field is optional).
_CFG_TYPES = {
    "labels": (list,),
    "scheme": (str,),
    "min_char_count": (int,),
    "n_chars": (int,),
    "n_lexicon_keys": (int, type(None)),
    "n_gazetteer_keys": (int, type(None)),
    "n_lexicon_vectors": (int, type(None)),
    CHECKSUM_KEY: (str,),
}


def parse_cfg(data: bytes, source: str, name: str) -> Dict[str, object]:
    """Read a pipe's cfg, naming the file and the field when it is malformed.

    data (bytes): The serialized cfg (JSON).
    source (str): Where it comes from (a file path, or "bytes").
    name (str): The component's name, for the error.
    RETURNS (Dict[str, object]): The cfg.
    """
    try:
        cfg = json.loads(data.decode("utf8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"Cannot load '{name}': {source} is not valid JSON ({err}).") from None
    except RecursionError:
        # json gives up on nesting deeper than the interpreter's recursion limit.
        raise ValueError(f"Cannot load '{name}': {source} is nested too deeply to be a pipe's cfg.") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"Cannot load '{name}': {source} must hold a JSON object, not {type(cfg).__name__}.")
    problems: List[str] = []
    for key, types in _CFG_TYPES.items():
        if key not in cfg:
            continue
        value = cfg[key]
        # bool is an int to Python, never a size or a count here.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"'{key}' must be {allowed}, got {_shown(value)}")
    labels: Optional[list] = cfg.get("labels") if isinstance(cfg.get("labels"), list) else None
    if labels is not None and not all(isinstance(label, str) and label for label in labels):
        problems.append(f"'labels' must be non-empty strings, got {_shown(labels)}")
    for key in (*SIZE_KEYS, "min_char_count"):
        if isinstance(cfg.get(key), int) and cfg[key] < 0:
            problems.append(f"'{key}' must not be negative, got {cfg[key]}")
    if problems:
        raise ValueError(f"Cannot load '{name}': {source} has invalid fields: " + "; ".join(problems) + ".")
    return cfg


def _shown(value: object, limit: int = 200) -> str:
    """A cfg value as JSON for an error message, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except RecursionError:
        text = "(a value nested too deeply)"
    return text if len(text) <= limit else text[:limit] + "…"
