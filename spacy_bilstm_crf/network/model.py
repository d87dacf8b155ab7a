"""The torch BiLSTM-CRF: code points → features → BiLSTM → emissions → CRF.

Pure torch, no spaCy. The module takes raw Unicode code points, so everything
between a string and its tags (normalization, the character table, hashed
bigrams, character classes) lives inside it, travels with its ``state_dict``
and is part of any scripted/exported copy.

``BiLSTMCRF`` is one class of ~460 lines, over the package's ~300, for that reason:
``torch.jit.script`` and ``torch.export`` take one module's methods as the program,
and saved pipelines' weights are its ``state_dict`` keys. The parts that need no
module state live elsewhere (``recurrence``, ``crf``, ``lexicon``, ``gazetteer``).
"""
from typing import Dict, Final, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .codepoints import normalize_codepoints
from .crf import LinearChainCRF, lengths_to_mask
from .gazetteer import GazetteerFeatures
from .lac import LACEncoder
from .lexicon import LEXICON_VECTOR_DIM, N_LEXICON_FLAGS, N_POS_FLAGS, N_SETS, LexiconFeatures
from .recurrence import Lookup, RaggedLayout, bilstm_rows, padded_bilstm
from .rnn_kernels import bilstm_layer
from .subnormals import zero_subnormals
from .tags import TagScheme

PAD_ID, UNK_ID = 0, 1
N_CHAR_CLASSES = 8
# Mixes a code point pair into one bigram key: larger than any code point + 2.
_BIGRAM_BASE = 0x110003
_BOUNDARY = -1  # the "code point" before the first and after the last character


def _within(cp: Tensor, lo: int, hi: int) -> Tensor:
    return (cp >= lo) & (cp <= hi)


def char_classes(cp: Tensor) -> Tensor:
    """Coarse class of each normalized code point, so unseen characters still carry a signal.

    RETURNS (Tensor): Long, same shape: 1 CJK ideograph, 2 Latin letter, 3 digit,
        4 whitespace, 5 punctuation/symbol, 6 other (emoji, other scripts),
        7 control character. (0 is padding, set by the caller.)
    """
    # No closures or loops over tuples of tensors here: TorchScript must compile it.
    cjk = _within(cp, 0x4E00, 0x9FFF) | _within(cp, 0x3400, 0x4DBF) | _within(cp, 0xF900, 0xFAFF)
    cjk = cjk | _within(cp, 0x20000, 0x2FFFF)
    latin = _within(cp, 0x61, 0x7A) | _within(cp, 0xC0, 0x24F)
    digit = _within(cp, 0x30, 0x39)
    space = (cp == 0x20) | _within(cp, 0x09, 0x0D) | (cp == 0x85) | (cp == 0xA0)
    space = space | _within(cp, 0x2000, 0x200B) | (cp == 0x2028) | (cp == 0x2029)
    punct = _within(cp, 0x21, 0x2F) | _within(cp, 0x3A, 0x40) | _within(cp, 0x5B, 0x60)
    punct = punct | _within(cp, 0x7B, 0x7E) | _within(cp, 0x2010, 0x206F)
    punct = punct | _within(cp, 0x3001, 0x303F) | _within(cp, 0xFF00, 0xFFEF)
    punct = punct | _within(cp, 0xA1, 0xBF)
    control = _within(cp, 0x00, 0x1F) | _within(cp, 0x7F, 0x9F)
    # Later classes win where ranges overlap: 5, 7, 4, 3, 2, 1.
    classes = torch.full_like(cp, 6)
    classes = torch.where(punct, torch.full_like(cp, 5), classes)
    classes = torch.where(control, torch.full_like(cp, 7), classes)
    classes = torch.where(space, torch.full_like(cp, 4), classes)
    classes = torch.where(digit, torch.full_like(cp, 3), classes)
    classes = torch.where(latin, torch.full_like(cp, 2), classes)
    return torch.where(cjk, torch.full_like(cp, 1), classes)


# Code points below this get their class from a table (``char_class_lookup``): every
# range of ``char_classes`` lies below it.
_CLASS_TABLE_SIZE = 0x30000
_CLASS_TABLE: List[Tensor] = []


@torch.jit.unused
def char_class_table() -> Tensor:
    """RETURNS (Tensor): Uint8 (``_CLASS_TABLE_SIZE``,): ``char_classes`` of every code
    point below the size (built at first use, 192 KB; the ONNX export stores it too)."""
    if not _CLASS_TABLE:
        _CLASS_TABLE.append(char_classes(torch.arange(_CLASS_TABLE_SIZE)).to(torch.uint8))
    return _CLASS_TABLE[0]


@torch.jit.unused
def char_class_lookup(cp: Tensor) -> Tensor:
    """``char_classes`` of code points on the CPU, from :func:`char_class_table`: one
    gather. RETURNS (Tensor): Long, same shape."""
    table = char_class_table()
    inside = cp < _CLASS_TABLE_SIZE
    found = table[torch.where(inside, cp, torch.zeros_like(cp))].to(torch.long)
    return torch.where(inside, found, torch.full_like(cp, 6))


# Batches of fewer sentences run nn.LSTM and LAC's padded loop: at 1 to 4 sentences
# their fewer, fused steps beat the ragged layout's bookkeeping (measured crossover ~8).
_RAGGED_MIN_BATCH = 8
# Largest projected embedding table (rows × 8 × hidden floats) folded into the LSTM.
_MAX_FOLDED_FLOATS = 2**24


def _zero_subnormals_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: subnormal weights take x86's slow path; zero them."""
    zero_subnormals(module)


def _foldable(lookup: Lookup, lstm: nn.LSTM) -> bool:
    """Whether a lookup's projected table is small enough to keep (64 MB in float32):
    a character table is; a hashed bigram table is not."""
    return lookup.embedding.num_embeddings * 8 * lstm.hidden_size <= _MAX_FOLDED_FLOATS


class BiLSTMCRF(nn.Module):
    """Character BiLSTM-CRF tagger.

    Training noise (dropout, unknown-character replacement) is applied on the
    training path alone, the call that is given gold tags; the module's
    ``train()``/``eval()`` mode changes nothing about a prediction. One module is
    shared by every thread that uses a pipeline, and thinc switches its mode
    around every call, so a prediction that read the mode could run with another
    thread's.

    n_chars (int): Number of known characters (the character table's size).
    scheme (TagScheme): The tags and their transition rules.
    char_dim (int): Width of the character embeddings.
    bigram_dim (int): Width of the hashed bigram embeddings (0 disables bigrams).
    bigram_buckets (int): Rows of the bigram hash table.
    class_dim (int): Width of the character-class embeddings (0 disables them).
    hidden_size (int): Width of the BiLSTM output (both directions together).
    depth (int): Number of BiLSTM layers.
    dropout (float): Dropout between BiLSTM layers and before the projection.
    embed_dropout (float): Dropout on the concatenated embeddings.
    unk_rate (float): In training, the share of known characters replaced by the
        unknown-character row, so that row learns what an unseen character means.
    layer_norm (bool): Apply LayerNorm to the BiLSTM output.
    lexicon_size (Optional[int]): Number of lexicon words for soft-lexicon features;
        None disables them (0 enables them with an empty lexicon).
    lexicon_max_len (int): Longest lexicon word matched.
    lexicon_dim (int): Width of the SoftLexicon input: the B/M/E/S sets' weighted mean
        word vectors (see ``lexicon.py``), projected to this width; 0 disables them.
    lexicon_pos (bool): Word-type flags from the lexicon's POS column.
    lexicon_typed_sets (bool): SoftLexicon's B/M/E/S sets split by word type (see
        ``LexiconFeatures.pooled_typed``): five times the sets. Needs ``lexicon_dim``
        and ``lexicon_pos``.
    lexicon_vectors (int): Rows of a pretrained word-vector table for the lexicon's
        words (0: none): their B/M/E means join the SoftLexicon input (see
        ``LexiconFeatures.pooled_word_vectors``). Needs ``lexicon_dim``.
    gazetteer_size (Optional[int]): Number of stored training entity strings for the
        gazetteer features (see ``gazetteer.py``); None disables them.
    gazetteer_max_len (int): Longest entity matched.
    gazetteer_folds (int): Folds of the gazetteer's training-time exclusion.
    lac_features (bool): Run LAC-small (see ``lac/``) and give its second BiGRU layer's
        states (256 per character) to the BiLSTM.
    lac_finetune (int): How many of LAC's BiGRU layers are trained, from the top: 0 (frozen:
        LAC runs without gradients), 1 or 2. LAC's embedding table stays frozen (the
        character table, which may start from it, is trained).
    lac_layers (int): 1: the second (top) BiGRU layer's states; 2: both layers' (512).
    lac_lr_scale (float): The learning rate of LAC's trained layers, as a share of the
        rest's (see :meth:`lr_scales`).
    vector_dim (int): Width of vectors given with the input (an upstream encoder's token
        vectors, one row per character); 0: none.
    """

    # Module globals copied as Final class constants: TorchScript reads no globals.
    _unk_id: Final[int] = UNK_ID
    _bigram_base: Final[int] = _BIGRAM_BASE
    _boundary: Final[int] = _BOUNDARY

    def __init__(
        self,
        n_chars: int,
        scheme: TagScheme,
        *,
        char_dim: int = 128,
        bigram_dim: int = 64,
        bigram_buckets: int = 100003,
        class_dim: int = 16,
        hidden_size: int = 256,
        depth: int = 1,
        dropout: float = 0.3,
        embed_dropout: float = 0.2,
        unk_rate: float = 0.02,
        layer_norm: bool = True,
        lexicon_size: Optional[int] = None,
        lexicon_max_len: int = 6,
        lexicon_dim: int = 0,
        lexicon_pos: bool = False,
        lexicon_typed_sets: bool = False,
        lexicon_vectors: int = 0,
        gazetteer_size: Optional[int] = None,
        gazetteer_max_len: int = 10,
        gazetteer_folds: int = 10,
        lac_features: bool = False,
        lac_finetune: int = 0,
        lac_layers: int = 1,
        lac_lr_scale: float = 1.0,
        vector_dim: int = 0,
    ) -> None:
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (two directions), got {hidden_size}")
        self.unk_rate = unk_rate
        self.dropout_rate = dropout
        self.embed_dropout_rate = embed_dropout
        self.bigram_buckets = bigram_buckets
        # Sorted known code points, preceded by a sentinel that matches nothing.
        self.register_buffer("char_table", torch.full((n_chars + 1,), -2, dtype=torch.long))
        self.char_embed = nn.Embedding(n_chars + 2, char_dim, padding_idx=PAD_ID)
        self.bigram_embed = (
            nn.Embedding(bigram_buckets + 1, bigram_dim, padding_idx=PAD_ID) if bigram_dim else None
        )
        self.class_embed = (
            nn.Embedding(N_CHAR_CLASSES, class_dim, padding_idx=PAD_ID) if class_dim else None
        )
        if lexicon_size is None and (lexicon_dim or lexicon_pos or lexicon_vectors):
            raise ValueError("lexicon_dim, lexicon_pos and lexicon vectors need a lexicon.")
        if lexicon_typed_sets and not (lexicon_dim and lexicon_pos):
            raise ValueError(
                "lexicon_typed_sets splits SoftLexicon's sets by word type: it needs lexicon_dim > 0 "
                f"and lexicon_pos = true (the types), got lexicon_dim = {lexicon_dim}, lexicon_pos = {lexicon_pos}."
            )
        self.lexicon = (
            LexiconFeatures(
                lexicon_size,
                lexicon_max_len,
                weighted=lexicon_dim > 0,
                with_pos=lexicon_pos,
                n_vectors=lexicon_vectors,
                vector_dim=LEXICON_VECTOR_DIM,
            )
            if lexicon_size is not None
            else None
        )
        self.lexicon_pos = lexicon_pos
        self.lexicon_typed_sets = lexicon_typed_sets
        # Typed sets: each of B/M/E/S per word type (POS_GROUPS, and none of them).
        n_sets = N_SETS * (N_POS_FLAGS // 2 + 1) if lexicon_typed_sets else N_SETS
        self.lexicon_project = nn.Linear(n_sets * char_dim, lexicon_dim) if lexicon_dim else None
        # The pretrained vectors' B/M/E means, projected to the same width and added
        # (a linear layer over both inputs' concatenation): the LSTM's input is unchanged.
        self.lexicon_vector_project = (
            nn.Linear(3 * LEXICON_VECTOR_DIM, lexicon_dim, bias=False) if lexicon_vectors else None
        )
        self.gazetteer = (
            GazetteerFeatures(gazetteer_size, len(scheme.labels), gazetteer_max_len, gazetteer_folds)
            if gazetteer_size is not None
            else None
        )
        self.lac = LACEncoder() if lac_features else None
        if int(lac_finetune) not in (0, 1, 2):
            raise ValueError(f"lac_finetune must be 0, 1 or 2 (layers trained), got {lac_finetune}")
        self.lac_finetune = int(lac_finetune)
        if lac_layers not in (1, 2):
            raise ValueError(f"lac_layers must be 1 or 2, got {lac_layers}")
        self.lac_layers = lac_layers
        if lac_lr_scale < 0:
            raise ValueError(f"lac_lr_scale must be 0 or more, got {lac_lr_scale}")
        self.lac_lr_scale = float(lac_lr_scale)
        if self.lac is not None:
            self.lac.requires_grad_(False)
            for layer in [self.lac.layer2, self.lac.layer1][: self.lac_finetune]:
                layer.requires_grad_(True)
        input_dim = char_dim + 2 * bigram_dim + class_dim
        input_dim += N_LEXICON_FLAGS if self.lexicon is not None else 0
        input_dim += N_POS_FLAGS if lexicon_pos else 0
        input_dim += lexicon_dim
        input_dim += self.gazetteer.width if self.gazetteer is not None else 0
        input_dim += lac_layers * self.lac.output_dim if self.lac is not None else 0
        self.vector_dim = vector_dim
        input_dim += vector_dim
        self.lstm = nn.LSTM(
            input_dim,
            hidden_size // 2,
            num_layers=depth,
            bidirectional=True,
            batch_first=True,
            dropout=dropout if depth > 1 else 0.0,
        )
        self.norm = nn.LayerNorm(hidden_size) if layer_norm else nn.Identity()
        self.project = nn.Linear(hidden_size, len(scheme))
        self.crf = LinearChainCRF(
            len(scheme),
            torch.as_tensor(scheme.allowed_transitions()),
            torch.as_tensor(scheme.allowed_start()),
            torch.as_tensor(scheme.allowed_end()),
        )
        # Predictions on the CPU multiply in bfloat16 (see ``recurrence.bilstm_rows``);
        # set from the architecture's ``bf16_inference``, not a hyperparameter.
        self.bf16_inference = False
        # Weights saved before LAC's subnormal floats were zeroed at import hold them;
        # any loaded state dict is cleared of them (see ``subnormals.py``).
        self.register_load_state_dict_post_hook(_zero_subnormals_after_load)
        self.train(False)

    def train(self, mode: bool = True) -> "BiLSTMCRF":
        """Record the mode; every submodule stays in eval mode.

        Nothing reads the mode (see the class docstring): submodules whose behaviour
        depends on theirs (the LSTM's dropout between layers) are switched by the
        training path itself. Keeping them in eval here means a ``train()`` call from
        one thread cannot reach a prediction running in another.
        """
        self.training = mode
        # thinc switches the mode around every prediction: walk the submodules only
        # when one was switched on (``_run_lstm`` switches the LSTM, and back).
        for module in self.children():
            if module.training:
                module.train(False)
        return self

    @torch.jit.unused
    def lr_scales(self) -> Dict[str, float]:
        """Learning-rate factors of parameters that do not train at the optimizer's rate,
        by parameter name (read by the optimizer step, ``torch_shim.py``): LAC's trained
        layers take ``lac_lr_scale``, so pretrained weights can move more slowly than
        the new ones.
        """
        if self.lac is None or self.lac_lr_scale == 1.0:
            return {}
        return {f"lac.{name}": self.lac_lr_scale for name, _ in self.lac.named_parameters()}

    def set_char_table(self, codepoints: Tensor) -> None:
        """Store the known characters. codepoints (Tensor): normalized, unique, sorted."""
        if len(codepoints) + 1 != len(self.char_table):
            raise ValueError(f"Expected {len(self.char_table) - 1} characters, got {len(codepoints)}")
        self.char_table[1:] = codepoints

    def char_ids(self, cp: Tensor, mask: Tensor, noise: bool = False) -> Tensor:
        """Embedding rows of normalized code points: known → its row, unseen → UNK, padding → 0.

        noise (bool): Replace a share ``unk_rate`` of the characters by UNK (training).
        """
        index = torch.searchsorted(self.char_table, cp).clamp_max(len(self.char_table) - 1)
        known = self.char_table[index] == cp
        ids = torch.where(known, index + 1, torch.full_like(index, self._unk_id))
        if noise and self.unk_rate > 0:
            drop = torch.rand(ids.shape, device=ids.device) < self.unk_rate
            ids = torch.where(drop, torch.full_like(ids, self._unk_id), ids)
        return torch.where(mask, ids, torch.zeros_like(ids))

    def bigram_ids(self, cp: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
        """Hashed rows of the (previous, current) and (current, next) character pairs."""
        boundary = torch.full_like(cp[:, :1], self._boundary)
        cp = torch.where(mask, cp, torch.full_like(cp, self._boundary))
        prev = torch.cat([boundary, cp[:, :-1]], dim=1)
        nxt = torch.cat([cp[:, 1:], boundary], dim=1)
        return self._bucket(prev, cp, mask), self._bucket(cp, nxt, mask)

    def _bucket(self, a: Tensor, b: Tensor, mask: Tensor) -> Tensor:
        """The hash table row of the pairs (a, b); 0 (padding) outside the mask."""
        key = (a + 2) * self._bigram_base + (b + 2)
        return torch.where(mask, key % self.bigram_buckets + 1, torch.zeros_like(key))

    def emissions(
        self, codepoints: Tensor, lengths: Tensor, noise: bool = False, vectors: Optional[Tensor] = None
    ) -> Tensor:
        """Tag scores. codepoints (Tensor): Long (batch, max_len), raw code points.

        noise (bool): Apply the training noise (dropouts, unknown-character replacement).
        vectors (Optional[Tensor]): Float (batch, max_len, vector_dim), when ``vector_dim``.
        RETURNS (Tensor): Float (batch, max_len, n_tags).
        """
        mask = lengths_to_mask(lengths, codepoints.shape[1])
        cp = normalize_codepoints(codepoints)
        char_ids = self.char_ids(cp, mask, noise)
        chars = self.char_embed(char_ids)
        features = [chars]
        if self.bigram_embed is not None:
            left, right = self.bigram_ids(cp, mask)
            features += [self.bigram_embed(left), self.bigram_embed(right)]
        classes: Optional[Tensor] = None
        if self.class_embed is not None:
            if torch.jit.is_scripting():
                found = char_classes(cp)
            elif torch.compiler.is_exporting() or cp.device.type != "cpu":
                found = char_classes(cp)
            else:  # one gather instead of some thirty comparisons (single calls)
                found = char_class_lookup(cp)
            classes = torch.where(mask, found, torch.zeros_like(cp))
            features.append(self.class_embed(classes))
        lexicon = self.lexicon
        if lexicon is not None:
            rows = lexicon.matches(cp, lengths)
            features.append(lexicon.word_flags(rows, cp.shape, self.lexicon_pos))
            if self.lexicon_project is not None:
                pooled = lexicon.pooled_typed(rows, chars) if self.lexicon_typed_sets else lexicon.pooled(rows, chars)
                soft = self.lexicon_project(pooled)
                if self.lexicon_vector_project is not None:
                    soft = soft + self.lexicon_vector_project(lexicon.pooled_word_vectors(rows, chars.dtype))
                features.append(soft)
        if self.gazetteer is not None:
            # Training sees the entities of the other folds only (see ``gazetteer.py``).
            features.append(self.gazetteer(cp, lengths, noise))
        # Where LAC's states join the features when a ragged prediction takes them as
        # rows, never padded (see ``_ragged_emissions``); -1: they are in ``features``.
        lac_position = -1
        if self.lac is not None:
            if torch.jit.is_scripting():
                features.append(self._lac_states(cp, lengths))
            elif self._lac_in_rows(cp, chars, noise):
                lac_position = len(features)
            else:
                features.append(self._lac_states(cp, lengths))
        if self.vector_dim > 0:
            if vectors is None:
                raise ValueError("This network reads an upstream encoder's vectors: pass vectors.")
            features.append(vectors.to(chars.dtype))
        # Empty sentences are given length 1 here and masked out by the CRF.
        lengths_1 = lengths.clamp_min(1)
        if torch.jit.is_scripting():  # a scripted copy only predicts
            hidden = self._packed_lstm(torch.cat(features, dim=-1), lengths_1)
        elif torch.compiler.is_exporting():  # an exported copy only predicts, too
            hidden = self._padded_lstm(torch.cat(features, dim=-1), lengths_1)
        elif self._ragged_inference(chars, noise):
            # (The features are not concatenated: the lookups fold into the LSTM.)
            return self._ragged_emissions(features, char_ids, classes, cp, lengths, lac_position)
        elif self._compiled_prediction(chars, noise):
            dense, lookups = self._folded_lookups(features, char_ids, classes)
            hidden = self._compiled_lstm(dense, lookups, features, lengths_1)
        else:
            x = nn.functional.dropout(torch.cat(features, dim=-1), self.embed_dropout_rate, noise)
            hidden = self._packed_lstm(x, lengths_1, noise)
        hidden = nn.functional.dropout(self.norm(hidden), self.dropout_rate, noise)
        return self.project(hidden)

    def _packed_lstm(self, x: Tensor, lengths: Tensor, noise: bool = False) -> Tensor:
        """The LSTM over the packed batch: packing keeps padding out of the backward direction."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        if torch.jit.is_scripting():
            output, _ = self.lstm(packed)
        else:
            output = self._run_lstm(packed, noise)
        hidden, _ = pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
        return hidden

    @torch.jit.unused
    def _compiled_lstm(self, dense: List[Tensor], lookups: List[Lookup], features: List[Tensor], lengths: Tensor) -> Tensor:
        """The LSTM as compiled kernels, a layer a call (``rnn_kernels.bilstm_layer``; the
        ``lookups`` folded into the first layer's input projection, the ``dense``
        features multiplied), or over the packed batch of all ``features`` where numba
        is unavailable."""
        x = torch.cat(dense, dim=-1) if dense else features[0].new_zeros(features[0].shape[:2] + (0,))
        hidden: Optional[Tensor] = x
        for layer in range(self.lstm.num_layers):
            assert hidden is not None
            hidden = bilstm_layer(self.lstm, layer, hidden, lengths, lookups if layer == 0 else ())
            if hidden is None:
                return self._packed_lstm(torch.cat(features, dim=-1), lengths)
        assert hidden is not None
        return hidden

    @torch.jit.unused
    def _folded_lookups(
        self, features: List[Tensor], char_ids: Tensor, classes: Optional[Tensor], offsets: Optional[List[int]] = None
    ) -> Tuple[List[Tensor], List[Lookup]]:
        """The character and class embeddings as lookups folded into the LSTM's input
        projection (``recurrence.Lookup``), where their projected tables are small enough
        (``_foldable``), and the features left to multiply.

        offsets (Optional[List[int]]): Where each feature's columns begin among the
            LSTM's inputs; None: the features side by side, in order.
        RETURNS (Tuple[List[Tensor], List[Lookup]]): The dense features, the lookups.
        """
        widths = [feature.shape[-1] for feature in features]
        if offsets is None:
            offsets = [sum(widths[:i]) for i in range(len(widths))]
        # (index among the features, lookup): the character table comes first, the
        # class table after the bigrams' two.
        candidates = [(0, Lookup(char_ids, self.char_embed, (offsets[0], offsets[0] + widths[0])))]
        if classes is not None and self.class_embed is not None:
            index = 3 if self.bigram_embed is not None else 1
            candidates.append((index, Lookup(classes, self.class_embed, (offsets[index], offsets[index] + widths[index]))))
        kept = [(index, lookup) for index, lookup in candidates if _foldable(lookup, self.lstm)]
        folded = {index for index, _ in kept}
        return [feature for i, feature in enumerate(features) if i not in folded], [lookup for _, lookup in kept]

    @torch.jit.unused
    def _padded_lstm(self, x: Tensor, lengths: Tensor) -> Tensor:
        """The LSTM for ``torch.export`` (see :func:`padded_bilstm`)."""
        if type(self.lstm) is not nn.LSTM:
            raise NotImplementedError(
                f"torch.export of a {type(self.lstm).__name__} (an INT8 LSTM) is not supported"
            )
        return padded_bilstm(self.lstm, x, lengths)

    @torch.jit.unused
    def _ragged_emissions(
        self,
        features: List[Tensor],
        char_ids: Tensor,
        classes: Optional[Tensor],
        codepoints: Tensor,
        lengths: Tensor,
        lac_position: int,
    ) -> Tensor:
        """Emissions through :func:`bilstm_rows`: the real characters only, through the
        LSTM and the output layer, with the character and class embeddings folded into
        the LSTM's input projection (see ``recurrence.Lookup``). With ``lac_position``
        at 0 or more, LAC runs here too and its states go to the LSTM as rows, at that
        place among the features (no padded copy, no concatenation).

        lengths (Tensor): Long (batch,), as given (an empty sentence runs as one padding
            character, masked by the CRF).
        """
        lengths_1 = lengths.clamp_min(1)
        layout = RaggedLayout(lengths_1, codepoints.shape[1])
        widths = [feature.shape[-1] for feature in features]
        offsets = [sum(widths[:i]) for i in range(len(widths))]
        packed: List[Tuple[Tensor, Tuple[int, int]]] = []
        if lac_position >= 0:
            lac_rows = self._lac_rows(codepoints, lengths, layout)
            lac_start = sum(widths[:lac_position])
            packed.append((lac_rows, (lac_start, lac_start + lac_rows.shape[1])))
            # The features after LAC's place start after its columns.
            offsets = [offset + lac_rows.shape[1] * (i >= lac_position) for i, offset in enumerate(offsets)]
        dense, lookups = self._folded_lookups(features, char_ids, classes, offsets)
        x = torch.cat(dense, dim=-1) if dense else features[0].new_zeros(features[0].shape[:2] + (0,))
        rows, layout = bilstm_rows(self.lstm, x, lengths_1, lookups, self._matmul_dtype(), packed, layout)
        return layout.to_padded(self.project(self.norm(rows)), x.shape[0], x.shape[1])

    @torch.jit.unused
    def _lac_in_rows(self, codepoints: Tensor, chars: Tensor, noise: bool) -> bool:
        """Whether LAC's states go to the LSTM as packed rows: a ragged prediction of
        both (:meth:`_ragged_inference`, :meth:`_ragged_lac`), not an export."""
        return (
            not torch.compiler.is_exporting()
            and self._ragged_inference(chars, noise)
            and self._ragged_lac(codepoints)
        )

    @torch.jit.unused
    def _lac_rows(self, codepoints: Tensor, lengths: Tensor, layout: RaggedLayout) -> Tensor:
        """LAC's states of the real characters in ``layout``'s packed order (the layer(s)
        given: ``lac_layers``); zero for the one row of an empty sentence, as padding.

        codepoints (Tensor): Normalized (the folding LAC's lookup applies by default).
        lengths (Tensor): Long (batch,), as given (0 for an empty sentence).
        """
        lac = self.lac
        assert lac is not None
        first, second = lac.encode_rows(lac.char_ids(codepoints, fold=False), layout, self._matmul_dtype())
        rows = second if self.lac_layers == 1 else torch.cat([first, second], dim=-1)
        if bool((lengths == 0).any()):
            sentence = layout.padded_rows.to(rows.device) // codepoints.shape[1]
            rows = rows.masked_fill((lengths[sentence] == 0)[:, None], 0.0)
        return rows

    @torch.jit.unused
    def _matmul_dtype(self) -> Optional[torch.dtype]:
        return torch.bfloat16 if self.bf16_inference else None

    @torch.jit.unused
    def _ragged_prediction(self, batch: int, device: torch.device) -> bool:
        """Whether a prediction runs the recurrences over the real characters only:
        no gradient, on the CPU, outside autocast, for a batch of a few sentences or
        more (below, ``nn.LSTM``'s and LAC's padded loops win with fewer, fused steps)."""
        return (
            not torch.is_grad_enabled()
            and batch >= _RAGGED_MIN_BATCH
            and device.type == "cpu"
            and not torch.is_autocast_enabled("cpu")
        )

    @torch.jit.unused
    def _compiled_prediction(self, x: Tensor, noise: bool) -> bool:
        """Whether the recurrences run as compiled kernels (``rnn_kernels.py``; ``x``: any
        of the LSTM's input features): a prediction without training noise or gradient,
        on the CPU, in float32, outside autocast and export, with a float ``nn.LSTM``,
        for a batch below :meth:`_ragged_prediction`'s (whose per-step matrix products
        are faster on more sentences)."""
        return (
            not noise
            and x.dtype == torch.float32
            and type(self.lstm) is nn.LSTM
            and not torch.compiler.is_exporting()
            and self._small_cpu_prediction(x)
        )

    @torch.jit.unused
    def _small_cpu_prediction(self, x: Tensor) -> bool:
        """What the compiled kernels need of any call (``x``: any input of the batch): no
        gradient, on the CPU, outside autocast, a batch below :meth:`_ragged_prediction`'s."""
        return (
            not torch.is_grad_enabled()
            and x.device.type == "cpu"
            and x.shape[0] < _RAGGED_MIN_BATCH
            and not torch.is_autocast_enabled("cpu")
        )

    @torch.jit.unused
    def _ragged_lac(self, codepoints: Tensor) -> bool:
        """Whether LAC runs over the real characters (:meth:`_lac_rows`): a ragged prediction
        (:meth:`_ragged_prediction`) with float32 weights."""
        lac = self.lac
        assert lac is not None
        return lac.embed.weight.dtype == torch.float32 and self._ragged_prediction(
            codepoints.shape[0], codepoints.device
        )

    @torch.jit.unused
    def _compiled_lac(self, codepoints: Tensor) -> bool:
        """Whether LAC runs as compiled kernels: float32 weights, no gradient, on the CPU,
        outside autocast, a batch below :meth:`_ragged_prediction`'s."""
        lac = self.lac
        assert lac is not None
        return lac.embed.weight.dtype == torch.float32 and self._small_cpu_prediction(codepoints)

    @torch.jit.unused
    def _ragged_inference(self, x: Tensor, noise: bool) -> bool:
        """Whether the LSTM runs as ``recurrence.bilstm_rows`` (``x``: any of its input
        features): a ragged prediction (:meth:`_ragged_prediction`) in float32 or
        float64, with no training noise and a float ``nn.LSTM`` (training, the GPU's
        cuDNN kernels and INT8 layers keep ``nn.LSTM``)."""
        return (
            not noise
            and type(self.lstm) is nn.LSTM
            and x.dtype in (torch.float32, torch.float64)
            and self._ragged_prediction(x.shape[0], x.device)
        )

    def _lac_states(self, codepoints: Tensor, lengths: Tensor) -> Tensor:
        """LAC's contextual states, zero at padding. codepoints (Tensor): normalized (the
        folding LAC's lookup applies by default)."""
        lac = self.lac
        assert lac is not None
        # Frozen layers' parameters do not require gradients, so autograd records
        # nothing for them: only the fine-tuned top layers build a graph.
        if torch.jit.is_scripting():
            first, second = lac.encode_layers(lac.char_ids(codepoints, fold=False), lengths)
        elif torch.compiler.is_exporting():
            first, second = lac.encode_layers_scan(lac.char_ids(codepoints, fold=False), lengths)
        elif self._ragged_lac(codepoints):
            batch, seq_len = codepoints.shape
            layout = RaggedLayout(lengths.clamp_min(1), seq_len)
            return layout.to_padded(self._lac_rows(codepoints, lengths, layout), batch, seq_len)
        else:
            ids = lac.char_ids(codepoints, fold=False)
            compiled = None
            if self._compiled_lac(codepoints):
                compiled = lac.encode_layers_compiled(ids, lengths)
            first, second = compiled if compiled is not None else lac.encode_layers(ids, lengths)
        states = second if self.lac_layers == 1 else torch.cat([first, second], dim=-1)
        mask = lengths_to_mask(lengths, codepoints.shape[1])[:, :, None]
        return torch.where(mask, states, torch.zeros_like(states))

    @torch.jit.unused
    def _run_lstm(self, packed: PackedSequence, noise: bool) -> PackedSequence:
        """The LSTM, with its dropout between layers on the training path only."""
        if not noise or self.lstm.num_layers == 1:
            return self.lstm(packed)[0]
        # nn.LSTM reads its own mode for this dropout: the training path switches it
        # on for its own call, and back off, so predictions always run with it off.
        self.lstm.train(True)
        try:
            return self.lstm(packed)[0]
        finally:
            self.lstm.train(False)

    def forward(
        self,
        codepoints: Tensor,
        lengths: Tensor,
        gold: Optional[Tensor] = None,
        vectors: Optional[Tensor] = None,
    ) -> Tensor:
        """With ``gold`` tags: the NLL per sentence (training). Without: the decoded tags.

        codepoints (Tensor): Long (batch, max_len).
        lengths (Tensor): Long (batch,).
        gold (Optional[Tensor]): Long (batch, max_len) gold tag ids, -1 where missing.
        vectors (Optional[Tensor]): Float (batch, max_len, vector_dim), when ``vector_dim``.
        RETURNS (Tensor): Float (batch,) NLL, or Long (batch, max_len) tags (-1 at padding).
        """
        # Gold tags mean training: the only call that applies training noise.
        emissions = self.emissions(codepoints, lengths, noise=gold is not None, vectors=vectors)
        if gold is not None:
            # A scripted copy (see ``export.py``) is for inference: TorchScript compiles
            # only the first branch of `if torch.jit.is_scripting()`, so the NLL's
            # eager-only code (autocast guard, finfo) is never compiled.
            if torch.jit.is_scripting():
                raise RuntimeError("A scripted BiLSTMCRF only decodes: pass no gold tags.")
            else:
                return self.crf.nll(emissions, gold, lengths)
        return self.crf.decode(emissions, lengths)
