"""thinc glue: the registered architecture, Docs → tensors, and the PyTorchWrapper.

The torch module's shape depends on the labels and the character table, which
are only known at ``initialize`` (or when a saved pipeline is loaded), so the
architecture returns a thin thinc ``Model`` whose torch layer is built by
:func:`build_torch_layer`, called by the pipe at those two moments.
"""
import inspect
import warnings
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy
import torch
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import ArgsKwargs, Model, PyTorchWrapper_v3, torch2xp, xp2torch
from thinc.types import Floats2d
from thinc.shims.pytorch_grad_scaler import PyTorchGradScaler
from thinc.util import get_torch_default_device

from ..features.chars import DocChars, doc_chars
from ..features.gazetteer_table import GazetteerTable
from ..features.lac_full_states import build_lac_full_states
from ..features.lexicon_vectors import LexiconVectors
from ..network.lac import LACEncoder
from ..network.lac.encoder import OOV_ID
from ..network.model import BiLSTMCRF
from ..serving.quantize import deserialize_quantized, quantize_module
from ..network.tags import TagScheme
from .torch_shim import InPlacePyTorchShim

# Input of the model: the docs (or the code points of each sequence: windows of
# long docs), in training the gold tag ids of each doc, and optionally (with an
# upstream encoder, for code point sequences) the vectors of each sequence's characters.
TaggerInput = Union[
    Tuple[Sequence[Union[Doc, numpy.ndarray]], Optional[Sequence[numpy.ndarray]]],
    Tuple[Sequence[Union[Doc, numpy.ndarray]], Optional[Sequence[numpy.ndarray]], Optional[Sequence[Any]]],
]


@dataclass
class TensorBatch:
    """A padded batch as arrays of the model's ops (numpy on CPU, cupy on GPU)."""

    codepoints: Any  # int64 (batch, max_len); max_len >= 1 so empty docs still fit
    lengths: Any  # int64 (batch,)
    gold: Optional[Any] = None  # int64 (batch, max_len)
    vectors: Optional[Any] = None  # float32 (batch, max_len, width): an upstream encoder's


@registry.architectures("spacy-bilstm-crf.BiLSTMCRF.v2")
def build_bilstm_crf_v2(
    tok2vec: Optional[Model[List[Doc], List[Floats2d]]] = None,
    char_dim: int = 128,
    bigram_dim: int = 0,
    bigram_buckets: int = 100003,
    class_dim: int = 16,
    hidden_size: int = 256,
    depth: int = 1,
    dropout: float = 0.4,
    embed_dropout: float = 0.2,
    unk_rate: float = 0.02,
    layer_norm: bool = True,
    lexicon: Optional[str] = "jieba",
    lexicon_max_len: int = 6,
    lexicon_dim: int = 64,
    lexicon_pos: bool = True,
    lexicon_typed_sets: bool = False,
    lexicon_vectors: Optional[str] = None,
    gazetteer: bool = True,
    gazetteer_max_len: int = 10,
    gazetteer_folds: int = 10,
    lac_embeddings: bool = False,
    lac_features: bool = True,
    lac_finetune: int = 1,
    lac_layers: int = 1,
    lac_lr_scale: float = 1.0,
    lac_full_states: Optional[str] = None,
    mixed_precision: bool = False,
    grad_scaler: Optional[PyTorchGradScaler] = None,
    quantize_int8: bool = False,
    bf16_inference: bool = False,
) -> Model[TaggerInput, Any]:
    """A character BiLSTM-CRF for NER: it reads the characters of each token.

    Every default is the benchmarked network (``configs/bilstm_crf.cfg``, the factory's
    default model): a block that names this architecture and leaves settings out gets
    that network, not a weaker one. spaCy fills a block that leaves settings out from
    these defaults (the factory's defaults apply to blocks naming ``v1`` only).

    tok2vec (Optional[Model[List[Doc], List[Floats2d]]]): An upstream encoder, e.g. a
        ``spacy.Tok2VecListener.v1`` of a ``tok2vec`` component or a transformer listener:
        each token's vector is given to each of its characters, next to the character
        features, and the gradient goes back to the encoder. None (default): none.
    char_dim (int): Width of the character embeddings.
    bigram_dim (int): Width of the hashed character-bigram embeddings; 0 (default) disables them.
    bigram_buckets (int): Rows of the bigram hash table (no vocabulary file needed).
    class_dim (int): Width of the character-class embeddings (CJK, Latin, digit, …); 0 disables.
    hidden_size (int): BiLSTM output width, both directions together.
    depth (int): Number of BiLSTM layers.
    dropout (float): Dropout between BiLSTM layers and before the projection. spaCy's
        ``[training] dropout`` does not reach torch modules, so it is set here.
    embed_dropout (float): Dropout on the embeddings.
    unk_rate (float): Share of characters replaced by the unknown row in training.
    layer_norm (bool): LayerNorm on the BiLSTM output.
    lexicon (Optional[str]): Soft-lexicon features from a word list: ``"jieba"`` (default:
        jieba's dictionary) or a path to a file with one word per line. Read at
        ``initialize`` only; the words are stored in the model, so loading a trained
        pipeline needs neither jieba nor the file. None disables the features.
    lexicon_max_len (int): Longest lexicon word matched.
    lexicon_dim (int): SoftLexicon (Ma et al. 2020): for each character, the B/M/E/S sets of
        matched lexicon words, each pooled from word vectors weighted by the words'
        log frequencies (jieba's counts), projected to this width (default 64). 0 disables it.
    lexicon_pos (bool): Word-type flags (person, place, organization, other proper
        noun) from the lexicon's POS column (jieba's ``nr``, ``ns``, ``nt``, ``nz``). On by default.
    lexicon_typed_sets (bool): SoftLexicon's B/M/E/S sets split by those word types (and
        words of none): 20 pooled means instead of 4, so a place word and a person word
        covering a character reach the network apart. Needs ``lexicon_dim`` and
        ``lexicon_pos``. Off by default (see ``configs/bilstm_crf.cfg``); the ONNX
        export does not take it.
    lexicon_vectors (Optional[str]): Pretrained word vectors for the lexicon's words,
        from Baidu's LAC 2.1.2 (Apache-2.0; 50,000 words, 128 wide): ``"lac"`` fetches
        its sdist from the package index into a cache folder (``$SPACY_BILSTM_CRF_CACHE``,
        else ``~/.cache/spacy-bilstm-crf``), or the path of a copy of
        ``LAC-2.1.2.tar.gz``. Read at ``initialize`` only; the covered words' vectors
        are stored in the model (float16, frozen), and their B/M/E means join the
        SoftLexicon input. Needs ``lexicon`` and ``lexicon_dim``. None (default): none.
    gazetteer (bool): Entity-gazetteer features: the training data's entity strings,
        stored in the model with their labels, matched in the text; per label, whether a
        known entity begins, continues or ends at each character. Training uses k-fold
        exclusion, so the network learns how often new text holds a known entity. On by
        default.
    gazetteer_max_len (int): Longest entity stored and matched.
    gazetteer_folds (int): Folds of the training-time exclusion: each training sentence
        sees the entities of the other folds' sentences only.
    lac_embeddings (bool): Initialize the character table from the embeddings of
        LAC-small, Baidu's lexical analyser shipped in jieba (characters LAC lacks keep
        a random row). Needs ``char_dim = 128``.
    lac_features (bool): Give LAC-small's contextual BiGRU states (256 per character)
        to the BiLSTM (default). LAC's weights (12 MB) are stored in the model.
    lac_finetune (int): How many of LAC's BiGRU layers train with the rest, from the top:
        0 (frozen), 1 (default) or 2. LAC's embedding table stays frozen.
    lac_layers (int): LAC's BiGRU layers whose states are given: 1 (the top one) or 2.
    lac_lr_scale (float): Learning rate of LAC's trained layers, as a share of the
        optimizer's: pretrained weights may move more slowly than the new ones.
    lac_full_states (Optional[str]): LAC-full's contextual states as features (Baidu's
        LAC 2.1.2, Apache-2.0, read from its sdist like ``lexicon_vectors``: ``"lac"`` or
        a path): LAC-full reads the text as its own segmenter cuts it (vocabulary words
        as one position), and each character gets its position's top BiGRU states and
        its place in the word (260 wide), as a frozen upstream encoder
        (``features/lac_full_states.py``). Stored in the pipeline at ``initialize``
        (the table in float16, 16 MB more). Not with ``tok2vec``; the exports and INT8
        do not take it. None (default): none.
    mixed_precision (bool): Autocast the network on GPU; the CRF always runs in float32.
        Without a CUDA GPU it is turned off, with a warning.
    grad_scaler (Optional[PyTorchGradScaler]): Gradient scaler for mixed precision.
    quantize_int8 (bool): INT8 dynamic quantization of the LSTM and output layer, for
        CPU inference; the weights are stored as int8. Inference only: train with
        false, then convert with ``python -m spacy_bilstm_crf quantize``.
    bf16_inference (bool): CPU predictions run the recurrences (LSTM, LAC) in
        bfloat16: products, gates and states; the output layer and the CRF stay float32,
        and the weights are stored in float32. Several times faster matrix products on
        CPUs with AMX (Intel Sapphire Rapids and later), possibly slower on others.
        Inference only; can be switched on when loading a trained pipeline, or written
        into a copy with ``python -m spacy_bilstm_crf quantize IN OUT --bf16``.
    RETURNS (Model[TaggerInput, Any]): Training: NLL per doc (Floats1d). Prediction:
        tag ids (Ints2d, -1 at padding).
    """
    hyper = dict(
        char_dim=char_dim,
        bigram_dim=bigram_dim,
        bigram_buckets=bigram_buckets,
        class_dim=class_dim,
        hidden_size=hidden_size,
        depth=depth,
        dropout=dropout,
        embed_dropout=embed_dropout,
        unk_rate=unk_rate,
        layer_norm=layer_norm,
        lexicon_max_len=lexicon_max_len,
        lexicon_dim=lexicon_dim,
        lexicon_pos=lexicon_pos,
        lexicon_typed_sets=lexicon_typed_sets,
        gazetteer_max_len=gazetteer_max_len,
        gazetteer_folds=gazetteer_folds,
        lac_features=lac_features,
        lac_finetune=lac_finetune,
        lac_layers=lac_layers,
        lac_lr_scale=lac_lr_scale,
    )
    if lac_embeddings and char_dim != 128:
        raise ValueError(f"lac_embeddings needs char_dim = 128 (LAC's width), got {char_dim}")
    if lexicon_vectors is not None and (lexicon is None or not lexicon_dim):
        raise ValueError(
            "lexicon_vectors needs a lexicon and lexicon_dim > 0: the word vectors are pooled "
            f"into the SoftLexicon input (lexicon = {lexicon!r}, lexicon_dim = {lexicon_dim})."
        )
    if lac_full_states is not None:
        if tok2vec is not None:
            raise ValueError(
                "lac_full_states gives the network LAC-full's states as its upstream encoder: "
                "it cannot be combined with a tok2vec layer. Set one of them."
            )
        tok2vec = build_lac_full_states(lac_full_states)
    if tok2vec is not None and quantize_int8:
        raise ValueError("quantize_int8 is for pipelines without an upstream tok2vec.")
    if quantize_int8 and bf16_inference:
        raise ValueError("quantize_int8 and bf16_inference exclude each other: choose one.")
    return Model(
        "bilstm_crf",
        _forward,
        # The encoder is a layer (its listener must be found by walking the model); the
        # torch network joins it at initialize or load (build_torch_layer).
        layers=[] if tok2vec is None else [tok2vec],
        refs={"tok2vec": tok2vec},
        attrs={
            "hyper": hyper,
            "lexicon": lexicon,
            "lexicon_vectors": lexicon_vectors,
            "lac_full_states": lac_full_states,
            "gazetteer": gazetteer,
            "lac_embeddings": lac_embeddings,
            "mixed_precision": mixed_precision,
            "grad_scaler": grad_scaler,
            "quantize_int8": quantize_int8,
            "bf16_inference": bf16_inference,
        },
    )


def build_bilstm_crf(**settings: Any) -> Model[TaggerInput, Any]:
    """``spacy-bilstm-crf.BiLSTMCRF.v2`` without an upstream encoder (its arguments but
    ``tok2vec``); kept so that configs and pipelines written with v1 load unchanged.
    """
    return build_bilstm_crf_v2(None, **settings)


# spaCy validates and fills a config block from the registered function's signature:
# v1's is v2's without ``tok2vec``, so the two cannot drift apart.
build_bilstm_crf.__signature__ = inspect.signature(build_bilstm_crf_v2).replace(  # type: ignore[attr-defined]
    parameters=list(inspect.signature(build_bilstm_crf_v2).parameters.values())[1:]
)
registry.architectures("spacy-bilstm-crf.BiLSTMCRF.v1")(build_bilstm_crf)


def build_torch_layer(
    model: Model,
    scheme: TagScheme,
    n_chars: int,
    n_lexicon_keys: Optional[int] = None,
    n_gazetteer_keys: Optional[int] = None,
    n_lexicon_vectors: Optional[int] = None,
    *,
    char_table: Optional[numpy.ndarray] = None,
    lexicon_keys: Optional[numpy.ndarray] = None,
    lexicon_weights: Optional[numpy.ndarray] = None,
    lexicon_pos: Optional[numpy.ndarray] = None,
    lexicon_vectors: Optional[LexiconVectors] = None,
    gazetteer: Optional[GazetteerTable] = None,
    lac: Optional[LACEncoder] = None,
) -> None:
    """Build (or rebuild) the torch module for these tags and table sizes.

    The character table and the lexicon keys are buffers of the module, so they
    are saved and loaded with its weights: to load a trained model, build it with
    the sizes only, then load the state dict.

    model (Model): A model made by ``build_bilstm_crf``.
    scheme (TagScheme): The tags and their transition rules.
    n_chars (int): Number of known characters (rows besides the unknown row).
    n_lexicon_keys (Optional[int]): Number of lexicon word keys; required when the
        model has a ``lexicon``.
    char_table (Optional[numpy.ndarray]): Sorted, unique, normalized code points of
        the known characters (``n_chars`` of them), to fill in a new model.
    lexicon_keys (Optional[numpy.ndarray]): Sorted lexicon word keys (see
        ``lexicon.py``), to fill in a new model.
    lexicon_weights (Optional[numpy.ndarray]): A weight per key (SoftLexicon).
    lexicon_pos (Optional[numpy.ndarray]): A word-type group per key.
    n_gazetteer_keys (Optional[int]): Number of gazetteer entity keys; required when
        the model has ``gazetteer`` on.
    n_lexicon_vectors (Optional[int]): Rows of the lexicon's pretrained word-vector
        table; required when the model has ``lexicon_vectors``.
    lexicon_vectors (Optional[LexiconVectors]): The vectors, to fill in a new model.
    gazetteer (Optional[GazetteerTable]): The training entities, to fill in a new model.
    lac (Optional[LACEncoder]): LAC-small with its weights, to fill in a new model's
        LAC features and, with ``lac_embeddings``, its character table.
    """
    use_lexicon = model.attrs["lexicon"] is not None
    if use_lexicon and n_lexicon_keys is None:
        raise ValueError("The model has a lexicon but its number of lexicon keys is not known.")
    use_gazetteer = bool(model.attrs.get("gazetteer", False))
    if use_gazetteer and n_gazetteer_keys is None:
        raise ValueError("The model has a gazetteer but its number of entity keys is not known.")
    use_vectors = use_lexicon and model.attrs.get("lexicon_vectors") is not None
    if use_vectors and n_lexicon_vectors is None:
        raise ValueError("The model has lexicon vectors but their number is not known.")
    module = BiLSTMCRF(
        n_chars,
        scheme,
        lexicon_size=n_lexicon_keys if use_lexicon else None,
        lexicon_vectors=int(n_lexicon_vectors or 0) if use_vectors else 0,
        gazetteer_size=n_gazetteer_keys if use_gazetteer else None,
        vector_dim=tok2vec_width(model),
        **model.attrs["hyper"],
    )
    if char_table is not None:
        module.set_char_table(torch.as_tensor(numpy.asarray(char_table, dtype="int64")))
    if module.lexicon is not None and lexicon_keys is not None:
        module.lexicon.set_keys(
            torch.tensor(numpy.asarray(lexicon_keys, dtype="int64")),
            None if lexicon_weights is None else torch.tensor(numpy.asarray(lexicon_weights, dtype="float32")),
            None if lexicon_pos is None else torch.tensor(numpy.asarray(lexicon_pos, dtype="int64")),
        )
    if module.lexicon is not None and module.lexicon.n_vectors and lexicon_vectors is not None:
        module.lexicon.set_word_vectors(
            torch.from_numpy(lexicon_vectors.rows), torch.from_numpy(lexicon_vectors.vectors)
        )
    if module.gazetteer is not None and gazetteer is not None:
        module.gazetteer.set_entries(torch.from_numpy(gazetteer.keys), torch.from_numpy(gazetteer.fold_labels))
    if lac is not None:
        init_from_lac(module, lac, bool(model.attrs.get("lac_embeddings", False)))
    module.bf16_inference = bool(model.attrs.get("bf16_inference", False))
    quantized = bool(model.attrs.get("quantize_int8", False))
    mixed_precision, grad_scaler = model.attrs["mixed_precision"], model.attrs["grad_scaler"]
    if quantized:
        # Quantize the freshly built module so that its state dict has the int8
        # layout; the pipe then loads the int8 weights into it.
        if mixed_precision:
            raise ValueError(
                "quantize_int8 and mixed_precision exclude each other: INT8 runs on the "
                "CPU, mixed precision on GPU. Set one of them to false."
            )
        module = quantize_module(module)
    elif mixed_precision and get_torch_default_device().type != "cuda":
        # thinc autocasts on CUDA only and its gradient scaler raises on other
        # devices, so a GPU config would fail its first update on a CPU machine.
        warnings.warn(
            "mixed_precision = true needs a CUDA GPU; running in float32 on "
            f"{get_torch_default_device()}."
        )
        mixed_precision, grad_scaler = False, None
    wrapper = PyTorchWrapper_v3(
        module,
        convert_inputs=_convert_inputs,
        convert_outputs=_convert_outputs,
        mixed_precision=mixed_precision,
        grad_scaler=grad_scaler,
        device=torch.device("cpu") if quantized else None,
        deserialize_model=deserialize_quantized if quantized else deserialize_weights,
    )
    # The same shim, with an optimizer step that does not grow memory (see its docstring);
    # PyTorchWrapper_v3 builds the shim itself, so its class is switched, not rebuilt.
    wrapper.shims[0].__class__ = InPlacePyTorchShim
    model._layers[:] = [layer for layer in model.layers if layer is not torch_layer(model)] + [wrapper]


def torch_layer(model: Model) -> Optional[Model]:
    """RETURNS (Optional[Model]): The PyTorchWrapper of the network; None before it is built."""
    layers = [layer for layer in model.layers if layer.shims]
    return layers[-1] if layers else None


def tok2vec_layer(model: Model) -> Optional[Model]:
    """RETURNS (Optional[Model]): The upstream encoder (listener), if the model has one."""
    return model.get_ref("tok2vec") if model.has_ref("tok2vec") else None


def tok2vec_width(model: Model) -> int:
    """RETURNS (int): The width of the upstream encoder's vectors; 0 without one."""
    tok2vec = tok2vec_layer(model)
    if tok2vec is None:
        return 0
    if not tok2vec.has_dim("nO") or tok2vec.get_dim("nO") is None:
        raise ValueError(
            "The tok2vec layer of bilstm_crf_ner has no output width (nO): set its width "
            "in the config (e.g. spacy.Tok2VecListener.v1's width)."
        )
    return int(tok2vec.get_dim("nO"))


def char_vectors(model: Model, chars: Sequence[DocChars], token_vectors: Sequence[Any]) -> List[Any]:
    """Each token's vector given to each of its characters (see ``chars.py``).

    chars (Sequence[DocChars]): The characters of each doc.
    token_vectors (Sequence[Any]): Float (n_tokens, width) per doc.
    RETURNS (List[Any]): Float (n_chars, width) per doc, arrays of the model's ops.
    """
    return [
        vectors if c.one_per_token else model.ops.xp.repeat(vectors, model.ops.asarray(c.token_lengths), axis=0)
        for c, vectors in zip(chars, token_vectors)
    ]


def init_from_lac(module: BiLSTMCRF, lac: LACEncoder, embeddings: bool) -> None:
    """Copy LAC-small's weights into a new module: its LAC features, and with
    ``embeddings`` the rows of the characters LAC knows in the character table.
    """
    with torch.no_grad():
        if module.lac is not None:
            module.lac.load_state_dict(lac.state_dict())
        if embeddings:
            table = module.char_table[1:]
            ids = lac.char_ids(table)
            known = ids != OOV_ID
            # Row j + 2 embeds table[j]: 0 is padding, 1 the unknown character.
            rows = torch.nonzero(known)[:, 0] + 2
            module.char_embed.weight[rows] = lac.embed.weight[ids[known]].to(module.char_embed.weight.dtype)


def deserialize_weights(model: torch.nn.Module, state_bytes: bytes, device: torch.device) -> torch.nn.Module:
    """Load a float32 state dict saved by thinc's ``PyTorchShim``, with ``weights_only=True``.

    thinc's default loader calls ``torch.load`` without it, which is safe only while
    torch's own default holds: an environment with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``
    would let a crafted model file run code on ``spacy.load``. The signature of thinc's
    ``deserialize_model`` hook (``PyTorchWrapper_v3``).
    """
    state = torch.load(BytesIO(state_bytes), map_location=device, weights_only=True)
    model.load_state_dict(state)  # (which zeroes subnormal weights: see BiLSTMCRF)
    return model.to(device)


def get_torch_module(model: Model) -> BiLSTMCRF:
    """RETURNS (BiLSTMCRF): The wrapped torch module. Raises if it is not built yet."""
    layer = torch_layer(model)
    if layer is None:
        raise ValueError(
            "The bilstm_crf_ner model is not initialized: call nlp.initialize() "
            "(or load a trained pipeline) before using it."
        )
    return layer.shims[0]._model


def doc_codepoints(doc: Doc) -> numpy.ndarray:
    """The code points of the characters of a doc's tokens, as the network reads them
    (see ``chars.py``): one per token under the character segmenter.
    """
    return doc_chars(doc).codepoints


def pad_batch(arrays: Sequence[numpy.ndarray], fill: int) -> numpy.ndarray:
    """Stack 1d int arrays into (batch, max(max_len, 1)), filling the rest with ``fill``."""
    max_len = max([len(a) for a in arrays] + [1])
    out = numpy.full((len(arrays), max_len), fill, dtype="int64")
    for row, array in zip(out, arrays):
        row[: len(array)] = array
    return out


def featurize(
    model: Model,
    docs: Sequence[Union[Doc, numpy.ndarray]],
    gold: Optional[Sequence[numpy.ndarray]],
    vectors: Optional[Sequence[Any]] = None,
) -> TensorBatch:
    """Docs, or code point arrays (and gold tags, and character vectors) → a padded
    batch on the model's device.
    """
    codepoints = [doc if isinstance(doc, numpy.ndarray) else doc_codepoints(doc) for doc in docs]
    lengths = numpy.array([len(cp) for cp in codepoints], dtype="int64")
    ops = model.ops
    padded_vectors = None
    if vectors is not None:
        width = tok2vec_width(model)
        padded_vectors = ops.alloc3f(len(codepoints), max(int(lengths.max(initial=0)), 1), width)
        for row, array in enumerate(vectors):
            padded_vectors[row, : len(array)] = array
    return TensorBatch(
        codepoints=ops.asarray(pad_batch(codepoints, 0)),
        lengths=ops.asarray(lengths),
        gold=None if gold is None else ops.asarray(pad_batch(gold, 0)),
        vectors=padded_vectors,
    )


def _forward(model: Model, X: TaggerInput, is_train: bool) -> Tuple[Any, Callable]:
    docs, gold = X[0], X[1]
    vectors = X[2] if len(X) > 2 else None  # type: ignore[misc]
    network = torch_layer(model)
    if network is None:
        get_torch_module(model)  # raises the not-initialized error
    tok2vec = tok2vec_layer(model)
    if tok2vec is None or vectors is not None:
        return network(featurize(model, docs, gold, vectors), is_train)
    if not all(isinstance(doc, Doc) for doc in docs):
        raise ValueError("With a tok2vec layer, pass Docs or the vectors of each sequence.")
    chars = [doc_chars(doc) for doc in docs]
    token_vectors, backprop_tok2vec = tok2vec(docs, is_train)
    Y, backprop_network = network(featurize(model, docs, gold, char_vectors(model, chars, token_vectors)), is_train)

    def backprop(dY: Any) -> List[Any]:
        # Each token's gradient is the sum of its characters'.
        d_vectors = backprop_network(dY)
        d_tokens = []
        for row, c in enumerate(chars):
            d_chars = d_vectors[row, : len(c.codepoints)]
            if not c.one_per_token:
                lengths = model.ops.asarray1i(c.token_lengths)
                d_chars = model.ops.reduce_sum(model.ops.xp.ascontiguousarray(d_chars), lengths)
            d_tokens.append(d_chars)
        backprop_tok2vec(d_tokens)
        return []

    return Y, backprop


def _convert_inputs(
    model: Model, batch: TensorBatch, is_train: bool
) -> Tuple[ArgsKwargs, Callable[[Any], Any]]:
    device = model.shims[0].device
    # Integer inputs: they never require gradients.
    args = (xp2torch(batch.codepoints, device=device), xp2torch(batch.lengths, device=device))
    kwargs: Dict[str, Any] = {}
    if batch.gold is not None:
        kwargs["gold"] = xp2torch(batch.gold, device=device)
    if batch.vectors is None:
        return ArgsKwargs(args=args, kwargs=kwargs), lambda d_inputs: None
    kwargs["vectors"] = xp2torch(batch.vectors, requires_grad=is_train, device=device)

    def backprop(d_inputs: ArgsKwargs) -> Any:
        grad = d_inputs.kwargs.get("vectors")
        if grad is None:  # nothing flowed back (e.g. no loss): a zero gradient
            return model.ops.alloc3f(*batch.vectors.shape)
        return torch2xp(grad)

    return ArgsKwargs(args=args, kwargs=kwargs), backprop


def _convert_outputs(model: Model, X_Ytorch: Tuple[Any, torch.Tensor], is_train: bool):
    _, Ytorch = X_Ytorch
    Y = torch2xp(Ytorch.detach())

    def backprop(dY: Any) -> ArgsKwargs:
        d_torch = xp2torch(dY, device=Ytorch.device)
        return ArgsKwargs(args=((Ytorch,),), kwargs={"grad_tensors": (d_torch,)})

    return Y, backprop
