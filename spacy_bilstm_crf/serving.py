"""Serve an exported tagger with torch alone: no spaCy, thinc or numpy.

This file imports only torch and the standard library, so it can be copied
next to an exported model (``python -m spacy_bilstm_crf export``) and used
where the package is not installed::

    from serving import Tagger

    tagger = Tagger.load("exported/")
    tagger("马云在阿里巴巴杭州总部发表演讲")
    # [(0, 2, 'name'), (3, 7, 'company'), (7, 9, 'address')]
    tagger.batch(["李明去北京大学读书", ""])

An export holds the network as a ``torch.export`` program from raw code points
to tag scores (emissions): normalization, character table, bigram hashing,
character classes, the lexicon and LAC are all inside it. The CRF's transition
scores are saved next to it, and the constrained Viterbi runs here, in plain
torch. What else is left here is spaCy's tokenization (see :func:`char_tokens`)
and tags → character spans.

Exports written before (format version 1) hold the whole network, Viterbi
included, as TorchScript; they still load (``torch.jit``, deprecated in torch).
INT8 pipelines are still exported that way (see ``deploy.export_pipeline``).
"""
import json
import re
import warnings
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

META_FILE = "tagger.json"
# Version 2: the emissions as a torch.export program, the CRF's scores, Viterbi here.
FORMAT = "spacy-bilstm-crf.export"
FORMAT_VERSION = 2
PROGRAM_FILE = "model.pt2"
CRF_FILE = "crf.pt"  # the CRF's masked (transitions, start, end): banned entries -inf
# The program's smallest input width (the lexicon's longest word + 1); narrower
# batches are padded, which changes no result.
MIN_WIDTH = 7
# Version 1: the whole network, Viterbi included, as TorchScript.
TORCHSCRIPT_FORMAT = "spacy-bilstm-crf.torchscript"
TORCHSCRIPT_VERSION = 1
MODEL_FILE = "model.pt"
FORMATS = {FORMAT: FORMAT_VERSION, TORCHSCRIPT_FORMAT: TORCHSCRIPT_VERSION}

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

    module (torch.nn.Module): Version 2: the exported program's module,
        ``(codepoints, lengths) → emissions``. Version 1: the scripted network,
        ``(codepoints, lengths) → tags``.
    meta (dict): The export's ``tagger.json`` (labels, tags, scheme).
    device (str): Where the network runs.
    crf (Optional[Tuple[Tensor, Tensor, Tensor]]): Version 2: the CRF's masked
        (transitions, start, end) scores.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        meta: dict,
        device: str = "cpu",
        crf: Optional[Tuple[Tensor, Tensor, Tensor]] = None,
    ) -> None:
        self.version = _format_version(meta)
        if self.version == FORMAT_VERSION and crf is None:
            raise ValueError(f"A version {FORMAT_VERSION} export needs the CRF's scores ({CRF_FILE}).")
        self.module = module
        self.meta = meta
        self.device = torch.device(device)
        self.crf = crf
        self.min_width = int(meta.get("min_width", MIN_WIDTH)) if self.version == FORMAT_VERSION else 1
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
        """Load an export directory: ``tagger.json`` with ``model.pt2`` and ``crf.pt``
        (version 2), or with ``model.pt`` (version 1, TorchScript).

        path (Union[str, Path]): The directory written by ``export``.
        device (str): ``"cpu"``; version 1 float32 exports also run on e.g. ``"cuda:0"``.
        RETURNS (Tagger): The loaded tagger.
        """
        path = Path(path)
        meta = json.loads((path / META_FILE).read_text(encoding="utf8"))
        version = _format_version(meta)
        if version == FORMAT_VERSION:
            if torch.device(device).type != "cpu":
                raise ValueError(f"A version {version} export runs on the CPU only, not on {device}.")
            program = torch.export.load(str(path / PROGRAM_FILE))
            scores = torch.load(str(path / CRF_FILE), map_location="cpu", weights_only=True)
            crf = (scores["transitions"], scores["start"], scores["end"])
            return cls(program.module(), meta, device, crf)
        if meta.get("quantized") and torch.device(device).type != "cpu":
            raise ValueError(f"An INT8 export runs on the CPU only, not on {device}.")
        with warnings.catch_warnings():
            # torch.jit is deprecated in favour of torch.export: version 1 exports still load.
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
        padded = torch.zeros(len(texts), max(width, self.min_width), dtype=torch.long)
        padded[:, :width][torch.arange(width)[None, :] < lengths[:, None]] = codes
        with torch.inference_mode():
            if self.crf is None:  # version 1: the scripted network decodes
                tags: Tensor = self.module(padded.to(self.device), lengths.to(self.device))
            else:
                emissions: Tensor = self.module(padded, lengths)
                # Empty texts are given length 1, as in the network; their tags are dropped.
                tags = viterbi(emissions[:, :width].float(), lengths.clamp_min(1), *self.crf)
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


def _format_version(meta: dict) -> int:
    """RETURNS (int): The export's format version. RAISES (ValueError): an unknown format."""
    fmt, version = meta.get("format"), meta.get("version")
    if fmt not in FORMATS or version != FORMATS[fmt]:
        known = ", ".join(f"{name} version {number}" for name, number in FORMATS.items())
        raise ValueError(f"Not a known export ({known}): format {fmt!r}, version {version!r}")
    return int(version)


# Sentences whose Viterbi buffer is filled at once.
VITERBI_CHUNK = 128


# The Viterbi lives here, in plain torch, because this file must work as a copy on its
# own; ``crf.LinearChainCRF`` decodes with these functions on a GPU and in scripted
# copies, and on the CPU with a compiled kernel that adds the same numbers in the same
# order (``kernels.py``), so every copy of a network finds the same paths.


def viterbi(
    emissions: Tensor,
    lengths: Tensor,
    trans: Tensor,
    start: Tensor,
    end: Tensor,
    pad: int = -1,
    chunk: int = VITERBI_CHUNK,
) -> Tensor:
    """The best path of each sentence under the CRF's masked scores (``-inf`` where banned).

    emissions (Tensor): Float (batch, max_len, n_tags), max_len >= 1.
    lengths (Tensor): Long (batch,), each in [0, max_len].
    trans, start, end (Tensor): Float (n_tags, n_tags), (n_tags,), (n_tags,).
    pad (int): The value written past each sentence's end.
    chunk (int): Sentences whose Viterbi buffer is filled at once.
    RETURNS (Tensor): Long (batch, max_len).
    """
    trans, start, end = trans.to(emissions.dtype), start.to(emissions.dtype), end.to(emissions.dtype)
    emissions, lengths, order = sort_by_length(emissions, lengths, chunk)
    scores = viterbi_scores(emissions, lengths, trans, start, chunk)
    return restore_order(viterbi_backtrack(scores, lengths, trans, end, pad), order)


def sort_by_length(emissions: Tensor, lengths: Tensor, chunk: int) -> Tuple[Tensor, Tensor, Tensor]:
    """With more than ``chunk`` sentences, the batch sorted by length, longest first, so
    that each chunk of :func:`viterbi_scores` stops at its own longest sentence.

    RETURNS (Tuple[Tensor, Tensor, Tensor]): emissions, lengths and the order taken
        (empty when the batch is left as it is).
    """
    if emissions.shape[0] <= chunk:
        return emissions, lengths, lengths[:0]
    order = torch.argsort(lengths, descending=True)
    return emissions.index_select(0, order), lengths.index_select(0, order), order


def restore_order(tags: Tensor, order: Tensor) -> Tensor:
    """The rows of ``tags`` back in the callers' order (see :func:`sort_by_length`)."""
    return tags if order.numel() == 0 else tags.index_select(0, torch.argsort(order))


def viterbi_scores(emissions: Tensor, lengths: Tensor, trans: Tensor, start: Tensor, chunk: int) -> Tensor:
    """The Viterbi forward pass: the best score of each tag at each position.

    Batch-last layout, (n_tags, batch): the max over the previous tag runs over the
    outermost dimension of a (from, to, batch) buffer, an elementwise max of contiguous
    slabs, several times faster than a max over a short innermost dimension. The buffer
    is filled for at most ``chunk`` sentences at a time, so it stays in cache, and each
    chunk stops at its longest sentence. Values only: no argmax here. Past a sentence's
    end (up to its chunk's longest) the scores run on unused; further on they are not
    computed (the buffer holds whatever was there).

    emissions (Tensor): Float (batch, max_len, n_tags), max_len >= 1.
    RETURNS (Tensor): Float (max_len, n_tags, batch).
    """
    batch, max_len, n_tags = emissions.shape
    emit = emissions.permute(1, 2, 0).contiguous()  # (max_len, n_tags, batch)
    trans_3d = trans.unsqueeze(2)  # (from, to, 1)
    chunk = max(1, min(batch, chunk))
    buffer = emissions.new_empty(n_tags, n_tags, chunk)
    scores = emissions.new_empty(max_len, n_tags, batch)
    torch.add(start.unsqueeze(1), emit[0], out=scores[0])
    # Chunks are independent, so each runs its whole time loop; the per-step views are
    # made up front (unbind), as indexing inside the loop costs as much Python time as
    # the arithmetic at small batch sizes.
    for lo in range(0, batch, chunk):
        hi = min(lo + chunk, batch)
        part = buffer[:, :, : hi - lo]
        block = scores[:, :, lo:hi]
        stop = max(1, int(lengths[lo:hi].max()))
        previous = block[: stop - 1].unsqueeze(2).unbind(0)  # (n_tags, 1, chunk) each
        following = block[1:stop].unbind(0)
        emitted = emit[1:stop, :, lo:hi].unbind(0)
        for prev, nxt, emit_t in zip(previous, following, emitted):
            torch.add(prev, trans_3d, out=part)
            torch.amax(part, dim=0, out=nxt)
            nxt.add_(emit_t)
    return scores


def viterbi_backtrack(scores: Tensor, lengths: Tensor, trans: Tensor, end: Tensor, pad: int) -> Tensor:
    """Viterbi backtracking in torch, in (batch, n_tags) layout: each step recomputes the
    chosen tag's predecessor scores (the same float sums as the forward, so ties break
    the same way) and takes the max over the innermost dimension, with its index.

    scores (Tensor): Float (max_len, n_tags, batch), from :func:`viterbi_scores`.
    RETURNS (Tensor): Long (batch, max_len), ``pad`` past each sentence's end.
    """
    max_len, n_tags, batch = scores.shape
    by_batch = scores.transpose(1, 2).contiguous()  # (max_len, batch, n_tags)
    last = (lengths - 1).clamp_min(0)
    final = by_batch.gather(0, last.view(1, -1, 1).expand(1, batch, n_tags))[0] + end
    final_tag = final.max(dim=1)[1]
    into = trans.t().contiguous()  # (to, from)
    within = (torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]).t()
    tag = final_tag
    path = [tag]
    for t in range(max_len - 1, 0, -1):
        candidates = into.index_select(0, tag).add_(by_batch[t - 1])
        prev = candidates.max(dim=1)[1]
        # A sentence that ends at t - 1 starts from its own best final tag there.
        tag = torch.where(within[t], prev, final_tag)
        path.append(tag)
    path.reverse()
    tags = torch.stack(path, dim=1)
    return torch.where(within.t(), tags, torch.full_like(tags, pad))
