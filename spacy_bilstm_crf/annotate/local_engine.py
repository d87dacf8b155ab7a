"""The local engine: `nlp.pipe` in this process, or in a pool of worker processes."""
import multiprocessing
import os
from collections import deque
from typing import Any, Deque, Dict, Iterator, Optional

import spacy
from spacy.language import Language

from .engines import Batch, BatchAnnotations
from .scoring import ScoreSettings, apply_scoring
from .tagging import tag_batch


# The pipeline of a local worker process: set before the pool forks (inherited),
# or loaded by the worker itself where processes are spawned.
_worker_nlp: Optional[Language] = None
_worker_settings: Optional[ScoreSettings] = None


def _init_worker(model: str, settings: Optional[Dict[str, Any]]) -> None:
    """Give a worker process its pipeline, scoring as the run says, on one torch thread
    (one process per core)."""
    global _worker_nlp, _worker_settings
    import torch

    torch.set_num_threads(1)
    if _worker_nlp is None:
        _worker_nlp = spacy.load(model)
    _worker_settings = None if settings is None else ScoreSettings.from_dict(settings)
    if _worker_settings is not None:
        apply_scoring(_worker_nlp, _worker_settings)


def _tag_batch(texts: Batch) -> BatchAnnotations:
    """Tag a batch in a worker process; only the annotations go back to the parent."""
    assert _worker_nlp is not None
    return tag_batch(_worker_nlp, texts, _worker_settings)


class LocalEngine:
    """Tags batches with `nlp.pipe` in this process, or in `n_process` worker processes.

    nlp (Language): The pipeline.
    model (str): Where it was loaded from: worker processes that are spawned, not
        forked, load it again.
    n_process (int): Processes; -1 for one per CPU.
    batch_size (int): Texts per batch, as the caller cuts them; each batch it is
        given is tagged as one `nlp.pipe` batch.
    settings (Optional[ScoreSettings]): What to score, in this process and in every
        worker; None: nothing.
    """

    name = "local"

    def __init__(
        self,
        nlp: Language,
        model: str,
        n_process: int = 1,
        batch_size: int = 256,
        settings: Optional[ScoreSettings] = None,
    ) -> None:
        self.nlp = nlp
        self.model = model
        self.n_process = (os.cpu_count() or 1) if n_process == -1 else n_process
        self.batch_size = batch_size
        self.settings = settings
        if settings is not None:
            apply_scoring(nlp, settings)  # before a pool forks: the workers inherit it

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchAnnotations]:
        """Tag batches, in order.

        batches (Iterator[List[str]]): Non-empty batches of texts.
        YIELDS (List[Dict[str, Any]]): Each batch's annotations, text by text.
        """
        if self.n_process > 1:
            yield from self.run_in_processes(batches)
            return
        # Batch by batch, not one nlp.pipe stream re-cut by its own batch size:
        # that would batch texts of two shards together, and a resumed run, which
        # starts at another shard, would batch (and so, with INT8, tag) differently.
        for batch in batches:
            yield tag_batch(self.nlp, batch, self.settings)

    def run_in_processes(self, batches: Iterator[Batch]) -> Iterator[BatchAnnotations]:
        """Tag batches in a pool of worker processes, a few batches in flight per worker.

        Not `nlp.pipe(n_process=N)`: it sends every Doc back to this process, and
        deserializing Docs here cost more than tagging them (2 processes ran at half
        the speed of 1 on the CLUENER texts). The workers send back annotations only.
        """
        global _worker_nlp
        methods = multiprocessing.get_all_start_methods()
        # fork: the workers share this process's loaded pipeline instead of loading it.
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        _worker_nlp = self.nlp if context.get_start_method() == "fork" else None
        try:
            settings = None if self.settings is None else self.settings.to_dict()
            pool = context.Pool(self.n_process, initializer=_init_worker, initargs=(self.model, settings))
        finally:
            _worker_nlp = None  # the children have their copy; this process needs none
        in_flight: Deque[Any] = deque()
        try:
            for batch in batches:
                # Bounded: reading ahead of the workers only costs memory.
                if len(in_flight) >= 2 * self.n_process:
                    yield in_flight.popleft().get()
                in_flight.append(pool.apply_async(_tag_batch, (batch,)))
            while in_flight:
                yield in_flight.popleft().get()
            pool.close()
        finally:
            pool.terminate()
            pool.join()

    def close(self) -> None:
        """Nothing to release: worker processes end with each run."""
