"""Load LAC-small's files from the jieba wheel into a :class:`LACEncoder`."""
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy
import torch

from .encoder import EMBED_DIM, HIDDEN, N_VOCAB_CHARS, OOV_ID, LACEncoder
from ..subnormals import zero_subnormals
from .paddle_files import PaddleFileError, read_paddle_tensor


def find_lac_dir() -> Path:
    """RETURNS (Path): jieba's ``lac_small`` folder. Raises if jieba or the folder is missing."""
    try:
        import jieba
    except ImportError as err:
        raise ImportError("The LAC features need the jieba package: pip install jieba") from err
    path = Path(jieba.__file__).parent / "lac_small"
    if not (path / "model_baseline").is_dir():
        raise FileNotFoundError(f"jieba's LAC-small model was not found in {path}")
    return path


def read_vocab(path: Path) -> Dict[str, int]:
    """``word.dic``: one ``id<TAB>entry`` per line. RETURNS (Dict[str, int]): entry → id."""
    vocab: Dict[str, int] = {}
    with path.open(encoding="utf8") as f:
        for number, line in enumerate(f, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 2 or not parts[0].isdigit():
                raise PaddleFileError(f"{path}, line {number}: expected 'id<TAB>entry', got {line!r}")
            vocab[parts[1]] = int(parts[0])
    return vocab


def read_tag_names(path: Path) -> List[str]:
    """``tag.dic``: RETURNS (List[str]): tag names by id (e.g. ``"nr-B"``, ``"PER-I"``, ``"O"``)."""
    vocab = read_vocab(path)
    names = [""] * len(vocab)
    for name, index in vocab.items():
        names[index] = name
    return names


def _tensor(folder: Path, name: str, shape: tuple) -> torch.Tensor:
    array = read_paddle_tensor(folder / name)
    if tuple(array.shape) != shape:
        raise PaddleFileError(f"{folder / name}: expected shape {shape}, found {tuple(array.shape)}")
    return torch.from_numpy(numpy.ascontiguousarray(array, dtype="float32"))


def load_lac_encoder(path: Optional[Union[str, Path]] = None) -> LACEncoder:
    """Build a :class:`LACEncoder` from LAC-small's files.

    path (Optional[Union[str, Path]]): The ``lac_small`` folder; jieba's by default.
    RETURNS (LACEncoder): The network, in eval mode.
    """
    folder = Path(path) if path is not None else find_lac_dir()
    vocab = read_vocab(folder / "word.dic")
    chars = sorted((ord(entry), index) for entry, index in vocab.items() if len(entry) == 1)
    if len(chars) != N_VOCAB_CHARS or vocab.get("OOV") != OOV_ID:
        raise PaddleFileError(
            f"{folder / 'word.dic'}: expected {N_VOCAB_CHARS} characters and OOV = {OOV_ID}, "
            f"found {len(chars)} and {vocab.get('OOV')}"
        )
    weights = folder / "model_baseline"
    encoder = LACEncoder()
    with torch.no_grad():
        encoder.vocab_codepoints.copy_(torch.tensor([cp for cp, _ in chars]))
        encoder.vocab_ids.copy_(torch.tensor([index for _, index in chars]))
    fill_encoder(encoder, lambda name, shape: _tensor(weights, name, shape))
    return encoder.eval()


def fill_encoder(encoder: LACEncoder, tensor: Callable[[str, Tuple[int, ...]], torch.Tensor]) -> None:
    """Copy LAC's Paddle weights into ``encoder``: LAC-small and LAC-full share the layout.

    encoder (LACEncoder): The network; its table and output sizes say the shapes expected.
    tensor (Callable[[str, Tuple[int, ...]], torch.Tensor]): A Paddle tensor by name,
        checked against the shape given (raises if it differs).
    """
    vocab_size, n_tags = encoder.embed.num_embeddings, encoder.output.out_features
    with torch.no_grad():
        encoder.embed.weight.copy_(tensor("word_emb", (vocab_size, EMBED_DIM)))
        # fc_0..fc_3 / gru_0..gru_3 in creation order: layer 1 forward, reverse, layer 2 forward, reverse.
        for layer_index, layer in enumerate((encoder.layer1, encoder.layer2)):
            input_dim = EMBED_DIM if layer_index == 0 else 2 * HIDDEN
            for direction in range(2):
                n = 2 * layer_index + direction
                fc_w = tensor(f"fc_{n}.w_0", (input_dim, 3 * HIDDEN))
                fc_b = tensor(f"fc_{n}.b_0", (3 * HIDDEN,))
                gru_w = tensor(f"gru_{n}.w_0", (HIDDEN, 3 * HIDDEN)).reshape(-1)
                gru_b = tensor(f"gru_{n}.b_0", (1, 3 * HIDDEN))[0]
                layer.in_weight[direction].copy_(fc_w)
                layer.in_bias[direction].copy_(fc_b + gru_b)
                # Not a [H, 3H] matrix: the first 2·H·H floats are [H, 2H] (update, reset),
                # the next H·H the [H, H] candidate weights.
                split = 2 * HIDDEN * HIDDEN
                layer.gate_weight[direction].copy_(gru_w[:split].reshape(HIDDEN, 2 * HIDDEN))
                layer.cand_weight[direction].copy_(gru_w[split:].reshape(HIDDEN, HIDDEN))
        encoder.output.weight.copy_(tensor("fc_4.w_0", (2 * HIDDEN, n_tags)).T)
        encoder.output.bias.copy_(tensor("fc_4.b_0", (n_tags,)))
        encoder.transitions.copy_(tensor("crfw", (n_tags + 2, n_tags)))
    zero_subnormals(encoder)  # the first BiGRU layer's files hold some: slow on x86
