"""Checks on a saved pipe: the weights and labels are the ones saved, cfg is well-formed.

A flipped block in a weights file can still load (the tensor shapes are intact)
and silently change every prediction; a label renamed in ``cfg`` silently
relabels entities. So ``cfg`` holds a SHA-256 of the serialized weights together
with the label set and tag scheme, written at save time and checked at load.
"""
import hashlib
import json
from typing import Dict, List, Optional, Sequence

CHECKSUM_KEY = "checksum"


def weights_checksum(model_bytes: bytes, labels: Sequence[str], scheme: str) -> str:
    """The checksum of serialized weights and the tags they were trained for.

    model_bytes (bytes): The serialized model (``Model.to_bytes``).
    labels (Sequence[str]): The entity labels, in order.
    scheme (str): The tag scheme.
    RETURNS (str): ``"sha256:"`` and the hex digest.
    """
    digest = hashlib.sha256(model_bytes)
    digest.update(json.dumps({"labels": list(labels), "scheme": scheme}, ensure_ascii=False).encode("utf8"))
    return "sha256:" + digest.hexdigest()


def check_weights(cfg: Dict[str, object], model_bytes: bytes, source: str, name: str) -> None:
    """Raise if the weights or the labels differ from those the checksum in ``cfg`` was made of.

    Pipes saved before checksums existed have none and are not checked.

    cfg (Dict[str, object]): The pipe's loaded cfg.
    model_bytes (bytes): The serialized model about to be loaded.
    source (str): Where the weights come from (a file path, or "bytes"), for the error.
    name (str): The component's name, for the error.
    """
    expected = cfg.get(CHECKSUM_KEY)
    if expected is None:
        return
    found = weights_checksum(model_bytes, cfg["labels"], str(cfg["scheme"]))  # type: ignore[arg-type]
    if found != expected:
        raise ValueError(
            f"Cannot load the weights of '{name}' from {source}: they do not match the "
            f"checksum saved with them in cfg ({expected}, found {found}). The weights file is "
            "corrupt or was replaced, or cfg's labels or scheme were edited. Save the pipeline "
            "again from its original, or retrain it."
        )


# cfg fields: the types each may hold (None where the field is optional).
_CFG_TYPES = {
    "labels": (list,),
    "scheme": (str,),
    "min_char_count": (int,),
    "n_chars": (int,),
    "n_lexicon_keys": (int, type(None)),
    "n_gazetteer_keys": (int, type(None)),
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
            problems.append(f"'{key}' must be {allowed}, got {json.dumps(value)}")
    labels: Optional[list] = cfg.get("labels") if isinstance(cfg.get("labels"), list) else None
    if labels is not None and not all(isinstance(label, str) and label for label in labels):
        problems.append(f"'labels' must be non-empty strings, got {json.dumps(labels, ensure_ascii=False)}")
    for key in ("n_chars", "n_lexicon_keys", "n_gazetteer_keys", "min_char_count"):
        if isinstance(cfg.get(key), int) and cfg[key] < 0:
            problems.append(f"'{key}' must not be negative, got {cfg[key]}")
    if problems:
        raise ValueError(f"Cannot load '{name}': {source} has invalid fields: " + "; ".join(problems) + ".")
    return cfg
