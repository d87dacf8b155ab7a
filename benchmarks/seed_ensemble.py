"""How far averaging trained seeds goes: the ceiling of an ensemble distilled into one network.

    python benchmarks/seed_ensemble.py MODEL [MODEL ...] [--data-dir DIR | --dev DEV_SPACY]

Each MODEL is a trained pipeline with a ``bilstm_crf_ner`` component (e.g. the default
config's ``model-best`` of seeds 0, 1 and 2). On CLUENER dev, for each model: its own
micro F1 (``nlp.pipe``, the CRF's Viterbi path) and the F1 of posterior decoding (the
valid tag path with the largest product of the CRF's tag marginals, to separate the
decoding rule from the averaging); then, for every subset of two or more models, the F1
of the same posterior decoding over the mean of their marginals. A network distilled
from an ensemble (the teachers' marginals as its targets) is, in practice, no better
than the ensemble itself, so the subsets' F1 bound that road. Writes
``benchmarks/results/seed_ensemble.json`` (``--out``).
"""
import argparse
import functools
import itertools
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy
import spacy
import torch
from spacy.tokens import Doc, DocBin

sys.path.insert(0, str(Path(__file__).resolve().parent))
from confidence import DEFAULT_DATA_DIR, RESULTS, Entity, convert_dev, prf, versions  # noqa: E402

from spacy_bilstm_crf.evaluation.calibration import doc_entities  # noqa: E402
from spacy_bilstm_crf.network.tags import TagScheme  # noqa: E402
from spacy_bilstm_crf.serving.tagger import viterbi  # noqa: E402

PIPE = "bilstm_crf_ner"


@functools.lru_cache(maxsize=None)
def masked_scores(scheme: TagScheme) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RETURNS: The scheme's (transitions, start, end) as scores: 0 where allowed, -inf
    where banned, so the Viterbi below keeps to valid paths and scores by marginals alone."""
    banned = float("-inf")
    return tuple(  # type: ignore[return-value]
        torch.where(torch.as_tensor(allowed), 0.0, banned).float()
        for allowed in (scheme.allowed_transitions(), scheme.allowed_start(), scheme.allowed_end())
    )


def posterior_entities(doc: Doc, marginals: numpy.ndarray, scheme: TagScheme, labels: Sequence[str]) -> Set[Entity]:
    """The entities of the valid tag path with the largest product of ``marginals``.

    marginals (numpy.ndarray): Float (len(doc), n_tags) tag marginals of the doc's tokens.
    RETURNS (Set[Entity]): ``(start_char, end_char, label)`` of the path's entities.
    """
    if len(doc) == 0:
        return set()
    scores = torch.from_numpy(numpy.log(numpy.maximum(marginals, 1e-12)).astype(numpy.float32))[None]
    tags = viterbi(scores, torch.tensor([len(doc)]), *masked_scores(scheme))[0].numpy()
    return {
        (doc[first].idx, doc[last - 1].idx + len(doc[last - 1]), labels[label])
        for first, last, label in scheme.tags_to_spans(tags)
    }


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", type=Path, nargs="+", help="Trained pipelines (the same labels and scheme)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--dev", type=Path, default=None, help="CLUENER dev as a DocBin (.spacy)")
    source.add_argument("--data-dir", type=Path, default=None, help="Directory with CLUENER's dev.json")
    parser.add_argument("--out", type=Path, default=RESULTS / "seed_ensemble.json")
    args = parser.parse_args(argv)

    missing = [str(path) for path in args.models if not path.exists()]
    if missing:
        sys.exit(f"Model not found: {', '.join(missing)}")
    torch.set_num_threads(1)
    nlps = [spacy.load(path) for path in args.models]
    pipes = [nlp.get_pipe(PIPE) for nlp in nlps]
    first = pipes[0]
    for path, pipe in zip(args.models, pipes):
        if pipe.scheme.tags != first.scheme.tags:
            sys.exit(f"{path}: its tags differ from {args.models[0]}'s: the marginals cannot be averaged")
    with tempfile.TemporaryDirectory() as tmp:
        dev_path = args.dev or convert_dev(args.data_dir or DEFAULT_DATA_DIR, Path(tmp))
        gold = [doc for doc in DocBin().from_disk(dev_path).get_docs(nlps[0].vocab) if doc.has_annotation("ENT_IOB")]
    texts = [doc.text for doc in gold]
    gold_ents = [doc_entities(doc) for doc in gold]
    print(f"{len(texts)} dev texts, {len(args.models)} models; load average {os.getloadavg()[0]:.1f}", file=sys.stderr)

    docs = [nlps[0].make_doc(text) for text in texts]
    marginals: List[List[numpy.ndarray]] = []
    models: List[Dict[str, Any]] = []
    for path, nlp, pipe in zip(args.models, nlps, pipes):
        own = [doc_entities(doc) for doc in nlp.pipe(texts, batch_size=256)]
        marginals.append(pipe.predict_marginals(nlp.make_doc(text) for text in texts))
        posterior = [posterior_entities(doc, m, first.scheme, first.labels) for doc, m in zip(docs, marginals[-1])]
        models.append({"model": str(path), "dev_f1": prf(own, gold_ents)["f"], "dev_f1_posterior": prf(posterior, gold_ents)["f"]})
        print(f"{path}: F1 {100 * models[-1]['dev_f1']:.2f} (posterior decoding {100 * models[-1]['dev_f1_posterior']:.2f})")

    ensembles = []
    for size in range(2, len(nlps) + 1):
        for members in itertools.combinations(range(len(nlps)), size):
            found = [
                posterior_entities(doc, numpy.mean([marginals[k][i] for k in members], axis=0), first.scheme, first.labels)
                for i, doc in enumerate(docs)
            ]
            ensembles.append({"members": list(members), "dev_f1": prf(found, gold_ents)["f"]})
            print(f"ensemble of {members}: F1 {100 * ensembles[-1]['dev_f1']:.2f}")
    single = [m["dev_f1"] for m in models]
    report = {
        "models": models,
        "ensembles": ensembles,
        "mean_single_f1": float(numpy.mean(single)),
        "best_ensemble_f1": max((e["dev_f1"] for e in ensembles), default=None),
        # Per number of models averaged: the mean F1 over the subsets of that size.
        "mean_ensemble_f1_by_size": {
            str(size): float(numpy.mean([e["dev_f1"] for e in ensembles if len(e["members"]) == size]))
            for size in range(2, len(nlps) + 1)
        },
        "all_models_ensemble_f1": ensembles[-1]["dev_f1"] if ensembles else None,
        "n_texts": len(texts),
        "versions": versions(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf8")
    by_size = ", ".join(f"{size}: {100 * f1:.2f}" for size, f1 in report["mean_ensemble_f1_by_size"].items())
    print(f"Mean F1 of the subsets by size: {by_size}")
    print(f"Mean of the models {100 * report['mean_single_f1']:.2f}; all {len(nlps)} averaged "
          f"{100 * (report['all_models_ensemble_f1'] or 0):.2f}; written to {args.out}")  # fmt: skip


if __name__ == "__main__":
    main()
