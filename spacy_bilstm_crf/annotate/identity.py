"""What a run's plan records of its model: a digest of the pipeline's files.

The plan of a run (see `shards.Layout.prepare`) decides whether an output
directory may be resumed. The model's path alone does not: a pipeline saved again
at the same path (retrained, quantized) would tag the remaining shards with
another model than the finished ones, silently.
"""
import hashlib
from pathlib import Path
from typing import List

from .inputs import file_digest

BLANK_PREFIX = "blank:"  # spacy.load("blank:zh"): a blank pipeline, no files


def model_dir(model: str) -> Path:
    """The directory a pipeline is loaded from: the path itself, or an installed package's.

    model (str): A pipeline directory or the name of an installed pipeline package.
    RETURNS (Path): The directory.
    """
    path = Path(model)
    if path.is_dir():
        return path
    import spacy.util  # here: the annotate CLI's module is imported without spaCy

    if spacy.util.is_package(model):
        return Path(spacy.util.get_package_path(model))
    raise OSError(f"Cannot find the pipeline {model}: it is neither a directory nor an installed package")


def model_files(directory: Path) -> List[Path]:
    """The files of a pipeline directory that make up the pipeline.

    directory (Path): The pipeline's directory.
    RETURNS (List[Path]): Its files, sorted; hidden files and Python caches left out.
    """
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(directory).parts)
    )


def model_digest(model: str) -> str:
    """A digest of everything that decides a pipeline's entities.

    Every file of the pipeline (config.cfg, meta.json, each component's cfg with
    the checksum of its weights, the weights, the tokenizer) by path and content:
    a model saved again at the same path gets another digest, a copy of the same
    model elsewhere the same one.

    model (str): A pipeline directory, an installed package, or "blank:LANG".
    RETURNS (str): "sha256:" and the hex digest.
    """
    if model.startswith(BLANK_PREFIX) and not Path(model).exists():
        return "sha256:" + hashlib.sha256(model.encode("utf8")).hexdigest()
    directory = model_dir(model)
    digest = hashlib.sha256()
    for path in model_files(directory):
        digest.update(f"{path.relative_to(directory).as_posix()}\0{file_digest(path)}\n".encode("utf8"))
    return "sha256:" + digest.hexdigest()
