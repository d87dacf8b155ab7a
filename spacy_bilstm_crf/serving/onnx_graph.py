"""The network split for ONNX Runtime: numpy tables for the features, a torch module for the graph.

``export --onnx`` writes the network as two halves (see ``onnx_features.py`` for why):

- :func:`feature_tables`: the tables ``onnx_features.FeatureTables`` computes the
  features from (character table, class table, lexicon and gazetteer keys, weights
  and types, LAC's vocabulary), saved as ``features.npz``;
- :class:`FeatureEmissions`: the features → emissions, the module that is exported
  (``torch.export``, then ``torch.onnx``): embeddings, SoftLexicon's means, LAC's
  BiGRUs, the BiLSTM, the layer norm and the output layer, with the trained
  network's own submodules.

Both follow ``BiLSTMCRF.emissions``; the tests hold the two halves together against it.
"""
import io
from typing import Dict, List

import numpy as np
import torch
from torch import Tensor, nn

from ..network.model import BiLSTMCRF, char_class_table
from ..network.lac.encoder import OOV_ID
from ..network.lexicon import N_POS_FLAGS
from ..network.crf import lengths_to_mask
from .onnx_features import INPUT_NAMES, MIN_PLACES, N_SETS, FeatureTables

# The graph's smallest width: a width of 1 would have been fixed at export.
MIN_WIDTH = 2


def check_exportable(network: BiLSTMCRF) -> None:
    """RAISES (NotImplementedError): A network the ONNX export cannot take."""
    if getattr(network, "vector_dim", 0):
        raise NotImplementedError("The network reads an upstream encoder's vectors: it cannot be exported alone.")
    if getattr(network, "lexicon_typed_sets", False):
        raise NotImplementedError(
            "ONNX export of SoftLexicon sets split by word type (lexicon_typed_sets) is not supported: "
            "export the pipeline as torch instead (export without --onnx)."
        )
    if type(network.lstm) is not nn.LSTM:
        raise NotImplementedError(f"ONNX export of a {type(network.lstm).__name__} (an INT8 LSTM) is not supported")


def feature_tables(network: BiLSTMCRF) -> bytes:
    """RETURNS (bytes): ``features.npz``: what ``onnx_features.FeatureTables`` needs."""
    tables: Dict[str, np.ndarray] = {"char_table": network.char_table.cpu().numpy()}
    sizes = {"bigram_buckets": network.bigram_buckets if network.bigram_embed is not None else 0}
    if network.class_embed is not None:
        tables["class_table"] = char_class_table().numpy()
    lexicon = network.lexicon
    if lexicon is not None:
        tables["lexicon_keys"] = lexicon.keys.cpu().numpy()
        sizes["lexicon_max_len"] = lexicon.max_len
        if network.lexicon_project is not None:
            tables["lexicon_weights"] = lexicon.weights.float().cpu().numpy()
        if network.lexicon_pos:
            tables["lexicon_pos"] = lexicon.pos.cpu().numpy().astype(np.int64)
            sizes["n_pos_groups"] = N_POS_FLAGS // 2
        if network.lexicon_vector_project is not None:
            tables["lexicon_vector_rows"] = lexicon.vector_rows.cpu().numpy()
    gazetteer = network.gazetteer
    if gazetteer is not None:
        tables["entity_keys"] = gazetteer.matcher.keys.cpu().numpy()
        tables["entity_labels"] = gazetteer.labels.cpu().numpy()
        sizes["entity_max_len"] = gazetteer.matcher.max_len
    if network.lac is not None:
        tables["lac_codepoints"] = network.lac.vocab_codepoints.cpu().numpy()
        tables["lac_ids"] = network.lac.vocab_ids.cpu().numpy()
        sizes["lac_oov"] = OOV_ID
    tables["size_names"] = np.array(sorted(sizes))
    tables["sizes"] = np.array([sizes[name] for name in sorted(sizes)], dtype=np.int64)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **tables)
    return buffer.getvalue()


class FeatureEmissions(nn.Module):
    """``BiLSTMCRF.emissions`` from the features of ``onnx_features`` (``INPUT_NAMES``,
    in order), for prediction: the function the ONNX export traces.

    network (BiLSTMCRF): The trained network (its submodules are used, not copied).
    """

    def __init__(self, network: BiLSTMCRF) -> None:
        super().__init__()
        check_exportable(network)
        self.network = network

    def forward(
        self,
        char_ids: Tensor,
        lengths: Tensor,
        left_bigrams: Tensor,
        right_bigrams: Tensor,
        classes: Tensor,
        word_flags: Tensor,
        place_target: Tensor,
        place_low: Tensor,
        place_high: Tensor,
        place_weight: Tensor,
        vector_target: Tensor,
        vector_row: Tensor,
        vector_weight: Tensor,
        entity_flags: Tensor,
        lac_ids: Tensor,
    ) -> Tensor:
        """RETURNS (Tensor): Float (batch, width, n_tags) emissions."""
        network = self.network
        chars = network.char_embed(char_ids)
        features: List[Tensor] = [chars]
        if network.bigram_embed is not None:
            features += [network.bigram_embed(left_bigrams), network.bigram_embed(right_bigrams)]
        if network.class_embed is not None:
            features.append(network.class_embed(classes))
        if network.lexicon is not None:
            features.append(word_flags)
            if network.lexicon_project is not None:
                soft = network.lexicon_project(soft_lexicon(chars, place_target, place_low, place_high, place_weight))
                if network.lexicon_vector_project is not None:
                    vectors = network.lexicon.word_vectors.index_select(0, vector_row).to(chars.dtype)
                    pooled = placed_sum(vectors * vector_weight[:, None], vector_target, chars.shape[0] * chars.shape[1] * 3)
                    soft = soft + network.lexicon_vector_project(pooled.reshape(chars.shape[0], chars.shape[1], -1))
                features.append(soft)
        if network.gazetteer is not None:
            features.append(entity_flags)
        if network.lac is not None:
            first, second = network.lac.encode_layers_scan(lac_ids, lengths)
            states = second if network.lac_layers == 1 else torch.cat([first, second], dim=-1)
            mask = lengths_to_mask(lengths, lac_ids.shape[1])[:, :, None]
            features.append(torch.where(mask, states, torch.zeros_like(states)))
        hidden = network._padded_lstm(torch.cat(features, dim=-1), lengths.clamp_min(1))
        return network.project(network.norm(hidden))


def placed_sum(values: Tensor, target: Tensor, n_rows: int) -> Tensor:
    """RETURNS (Tensor): (n_rows, dim): the sum of ``values``' rows at each ``target`` row."""
    return torch.zeros(n_rows, values.shape[1], dtype=values.dtype).index_add(0, target, values)


def soft_lexicon(chars: Tensor, target: Tensor, low: Tensor, high: Tensor, weight: Tensor) -> Tensor:
    """SoftLexicon's B/M/E/S means from ``onnx_features``' places: each place adds its
    word's character sum (a difference of prefix sums) times its coefficient.

    chars (Tensor): Float (batch, width, dim) character vectors.
    RETURNS (Tensor): Float (batch, width, 4 * dim).
    """
    batch, width, dim = chars.shape
    prefix = torch.cat([chars.new_zeros(batch, 1, dim), chars.cumsum(dim=1)], dim=1).reshape(-1, dim)
    sums = (prefix.index_select(0, high) - prefix.index_select(0, low)) * weight[:, None]
    return placed_sum(sums, target, batch * width * N_SETS).reshape(batch, width, N_SETS * dim)


def example_inputs(tables: FeatureTables, width: int) -> Dict[str, Tensor]:
    """An example batch of features for ``torch.export``: three random CJK sentences."""
    generator = torch.Generator().manual_seed(0)
    codepoints = torch.randint(0x4E00, 0x9FA5, (3, width), generator=generator).numpy()
    lengths = np.array([width, width - 1, 1], dtype=np.int64)
    feed = tables.features(codepoints, lengths)
    # At least MIN_PLACES places, always (a size-0 or size-1 axis is fixed at export).
    assert len(feed["place_target"]) >= MIN_PLACES
    return {name: torch.from_numpy(np.ascontiguousarray(feed[name])) for name in INPUT_NAMES}
