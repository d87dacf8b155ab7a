"""Serve an exported tagger with torch alone: no spaCy, thinc or numpy.

This file imports only torch and the standard library, so it can be copied
next to an exported model (``python -m spacy_bilstm_crf export``) and used
where the package is not installed::

    from serving import Tagger

    tagger = Tagger.load("exported/")
    tagger("马云在阿里巴巴杭州总部发表演讲")
    # [(0, 2, 'name'), (3, 7, 'company'), (7, 9, 'address')]
    tagger.batch(["李明去北京大学读书", ""])

The export holds the whole network as TorchScript, from raw code points to
constrained Viterbi tags: normalization, character table, bigram hashing,
character classes and the lexicon are all inside it. What is left here is
spaCy's tokenization (see :func:`char_tokens`) and tags → character spans.
"""
import json
import re
import warnings
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Tuple, Union

import torch
from torch import Tensor

MODEL_FILE = "model.pt"
META_FILE = "tagger.json"
FORMAT = "spacy-bilstm-crf.torchscript"
FORMAT_VERSION = 1

# (start_char, end_char_exclusive, label)
Entity = Tuple[int, int, str]
_WHITESPACE = re.compile(r"\s")  # the same characters as str.isspace()


def char_tokens(text: str) -> List[Tuple[int, int]]:
    """The tokens of spaCy's Chinese ``char`` segmenter, as character offsets.

    Mirrors ``spacy.util.get_words_and_spaces(list(text), text)``: every
    non-whitespace character is a token; one space (U+0020) right after a token
    becomes its trailing whitespace; any other whitespace run (leading, trailing,
    longer, or not a plain space) is one token of its own.

    text (str): The text.
    RETURNS (List[Tuple[int, int]]): ``(start, end_exclusive)`` of each token.
    """
    if not _WHITESPACE.search(text):
        return [(i, i + 1) for i in range(len(text))]
    tokens: List[Tuple[int, int]] = []
    pos = 0
    for i, char in enumerate(text):
        if char.isspace():
            continue
        if i > pos:  # the whitespace between the previous token and this one
            tokens.append((pos, i))
        tokens.append((i, i + 1))
        pos = i + 1
        if pos < len(text) and text[pos] == " ":
            pos += 1
    if pos < len(text):
        tokens.append((pos, len(text)))
    return tokens


class Tagger:
    """An exported BiLSTM-CRF: texts → entities as character offsets.

    module (torch.jit.ScriptModule): The scripted network: ``(codepoints, lengths) → tags``.
    meta (dict): The export's ``tagger.json`` (labels, tags, scheme).
    device (str): Where the network runs.
    """

    def __init__(self, module: torch.jit.ScriptModule, meta: dict, device: str = "cpu") -> None:
        if meta.get("format") != FORMAT or meta.get("version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"Not a {FORMAT} export (version <= {FORMAT_VERSION}): "
                f"format {meta.get('format')!r}, version {meta.get('version')!r}"
            )
        self.module = module
        self.meta = meta
        self.device = torch.device(device)
        self.labels: List[str] = list(meta["labels"])
        self.scheme: str = meta["scheme"]
        tags: List[str] = meta["tags"]
        # Per tag id: its prefix ("O", "B", "I", "E", "S") and its label index (-1 for O).
        self._prefix = [tag.split("-", 1)[0] for tag in tags]
        self._label = [
            -1 if tag == "O" else self.labels.index(tag.split("-", 1)[1]) for tag in tags
        ]

    @classmethod
    def load(cls, path: Union[str, Path], device: str = "cpu") -> "Tagger":
        """Load an export directory (``model.pt`` and ``tagger.json``).

        path (Union[str, Path]): The directory written by ``export``.
        device (str): ``"cpu"`` or e.g. ``"cuda:0"`` (float32 exports only: INT8 is CPU-only).
        RETURNS (Tagger): The loaded tagger.
        """
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text(encoding="utf8"))
        if meta.get("quantized") and torch.device(device).type != "cpu":
            raise ValueError(f"An INT8 export runs on the CPU only, not on {device}.")
        with warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export, which cannot keep the
            # network's data-dependent time loops; TorchScript still works.
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(path / MODEL_FILE), map_location=device)
        return cls(module.eval(), meta, device)

    def __call__(self, text: str) -> List[Entity]:
        """The entities of one text. RETURNS (List[Entity]): ``(start_char, end_char, label)``."""
        return self.batch([text])[0]

    def batch(self, texts: Sequence[str]) -> List[List[Entity]]:
        """The entities of each text, in one forward pass.

        texts (Sequence[str]): The texts.
        RETURNS (List[List[Entity]]): Per text, ``(start_char, end_char, label)`` triples.
        """
        if not texts:
            return []
        tokens = [char_tokens(text) for text in texts]
        if not any(tokens):
            return [[] for _ in texts]
        tags = self.predict(texts, tokens)
        return [self.entities(toks, row) for toks, row in zip(tokens, tags)]

    def entities(self, tokens: List[Tuple[int, int]], tags: List[int]) -> List[Entity]:
        """Entities from the tags of the characters of the tokens, as the pipeline maps them
        (its default ``boundary = "expand"``): an entity that cuts a token (only a whitespace
        run can be longer than one character here) covers the whole token, and one that
        overlaps an earlier entity after that is dropped.
        """
        spans = self.tags_to_spans(tags)
        if len(tokens) == len(tags):  # one character per token: the identity, no overlaps
            return [(tokens[start][0], tokens[end - 1][1], self.labels[label]) for start, end, label in spans]
        owner = [k for k, (start, end) in enumerate(tokens) for _ in range(end - start)]
        taken = [False] * len(tokens)
        found = []
        for start, end, label in spans:
            first, last = owner[start], owner[end - 1]
            if any(taken[first : last + 1]):
                continue
            taken[first : last + 1] = [True] * (last + 1 - first)
            found.append((tokens[first][0], tokens[last][1], self.labels[label]))
        return found

    def pipe(self, texts: Iterable[str], batch_size: int = 256) -> Iterator[List[Entity]]:
        """Stream the entities of many texts, ``batch_size`` texts per forward pass."""
        chunk: List[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) == batch_size:
                yield from self.batch(chunk)
                chunk = []
        if chunk:
            yield from self.batch(chunk)

    def predict(
        self, texts: Sequence[str], tokens: Sequence[List[Tuple[int, int]]]
    ) -> List[List[int]]:
        """Tag ids per character of the tokens: the network reads each token's characters
        (whitespace between tokens is not part of one).
        """
        firsts = [
            text if len(toks) == len(text) else "".join(text[start:end] for start, end in toks)
            for text, toks in zip(texts, tokens)
        ]
        lengths = torch.tensor([len(f) for f in firsts], dtype=torch.long)
        # One UTF-32 buffer for the whole batch: code points without a per-character loop.
        flat = bytearray("".join(firsts).encode("utf-32-le"))
        codes = torch.frombuffer(flat, dtype=torch.int32).long() if flat else lengths[:0]
        width = max(int(lengths.max()), 1)  # as the pipeline pads: empty texts still fit
        padded = torch.zeros(len(texts), width, dtype=torch.long)
        padded[torch.arange(width)[None, :] < lengths[:, None]] = codes
        with torch.inference_mode():
            tags: Tensor = self.module(padded.to(self.device), lengths.to(self.device))
        return [row[:n] for row, n in zip(tags.cpu().tolist(), lengths.tolist())]

    def tags_to_spans(self, tags: List[int]) -> List[Tuple[int, int, int]]:
        """Spans ``(start_token, end_token_exclusive, label_index)`` of a valid tag sequence."""
        prefix = [self._prefix[t] for t in tags]
        starts = [i for i, p in enumerate(prefix) if p in ("B", "S")]
        if self.scheme == "BIOES":
            ends = [i for i, p in enumerate(prefix) if p in ("E", "S")]
        else:  # BIO: an entity ends where the next tag does not continue it
            ends = [
                i
                for i, p in enumerate(prefix)
                if p in ("B", "I") and (i + 1 == len(prefix) or prefix[i + 1] != "I")
            ]
        if len(starts) != len(ends):
            raise ValueError(f"Invalid {self.scheme} tag sequence: {tags}")
        return [(s, e + 1, self._label[tags[s]]) for s, e in zip(starts, ends)]
