"""The ray engine: Ray Data `map_batches` on actors that each load the pipeline once.

Ray is imported only here, and only when this engine is asked for.
"""
import json
import logging
import os
from typing import Any, Dict, Iterator, List, Optional

import spacy

from .engines import Batch, BatchAnnotations
from .scoring import ScoreSettings, apply_scoring
from .tagging import tag_batch

RAY_INSTALL_HINT = (
    "The ray engine needs Ray Data: pip install \"spacy-bilstm-crf[ray]\" "
    "(or: pip install \"ray[data]\" pyarrow)"
)
# Token authentication (Ray >= 2.52; on by default for clusters that `ray start
# --head` starts where a token exists, from 2.59): the mode and where the token is.
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENVS = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
AUTH_HINT = (
    "A cluster started with `ray start --head` may require token authentication (Ray >= 2.59 turns it on "
    "when the head has a token, e.g. ~/.ray/auth_token): set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH "
    "to a copy of the head's token file (or RAY_AUTH_TOKEN to the token) for annotate, as on every node "
    "that joins the cluster."
)
# Texts per Ray Data dataset: the driver holds this many texts at a time, and
# each dataset starts its actors (and loads the pipeline) once.
RAY_WINDOW_TEXTS = 200_000


def require_ray() -> Any:
    """Import Ray and Ray Data, or say how to install them.

    RETURNS (module): The `ray` module.
    """
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as err:
        raise ImportError(RAY_INSTALL_HINT) from err
    return ray


def without_traceback(text: str) -> str:
    """A message with an embedded traceback (Ray puts one in its own) cut to its last line.

    text (str): The message.
    RETURNS (str): The text before the traceback, and the traceback's last line.
    """
    marker = "Traceback (most recent call last):"
    if marker not in text:
        return text
    before, _, trace = text.partition(marker)
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    return " ".join(part for part in (before.strip(), lines[-1] if lines else "") if part)


def causes(err: BaseException) -> str:
    """An error with the errors that caused it: Ray's own message hides the reason.

    err (BaseException): The error.
    RETURNS (str): Its message and its causes', outermost first, without repeats.
    """
    messages: List[str] = []
    seen = set()
    current: Optional[BaseException] = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = without_traceback(str(current).strip()) or type(current).__name__
        if text not in messages:
            messages.append(text)
        current = current.__cause__ or current.__context__
    return ": ".join(messages)


class BatchAnnotator:
    """A Ray Data actor: loads the pipeline once, then tags the batches it is given.

    model (str): A pipeline directory (present on every node) or installed package.
    threads (int): Torch threads, the CPUs reserved for the actor.
    use_gpu (bool): Whether the actor has a GPU to run on.
    scores (Optional[Dict[str, Any]]): What to score (`ScoreSettings.to_dict`); None: nothing.
    """

    def __init__(
        self, model: str, threads: int = 1, use_gpu: bool = False, scores: Optional[Dict[str, Any]] = None
    ) -> None:
        import torch

        if use_gpu:
            spacy.require_gpu(0)  # Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU
        # Without this every actor would start one torch thread per core of the node.
        torch.set_num_threads(max(1, threads))
        self.nlp = spacy.load(model)
        # The actor's own copy of the pipeline scores as the run says.
        self.settings = None if scores is None else ScoreSettings.from_dict(scores)
        if self.settings is not None:
            apply_scoring(self.nlp, self.settings)

    def __call__(self, rows: Dict[str, Any]) -> Dict[str, Any]:
        """Tag batches of texts, each as one batch (as the local engine does).

        rows (Dict[str, numpy.ndarray]): A "texts" column: each row one batch, as a JSON list.
        RETURNS (Dict[str, List[str]]): An "entities" column: each batch's annotations
            (entities, and the scores asked for), as JSON.
        """
        # JSON strings: a column of plain strings has the same Arrow type in every
        # block, which nested lists (empty in some blocks) do not.
        return {
            "entities": [
                json.dumps(tag_batch(self.nlp, json.loads(str(texts)), self.settings), ensure_ascii=False)
                for texts in rows["texts"]
            ]
        }


class RayEngine:
    """Tags batches with Ray Data: `map_batches` on a pool of `BatchAnnotator` actors.

    model (str): A pipeline directory (present on every node) or installed package.
    num_workers (int): Actors, each with its own copy of the pipeline.
    cpus_per_worker (float): CPUs reserved per actor.
    gpus_per_worker (float): GPUs reserved per actor.
    batch_size (int): Texts per batch, as the caller cuts them; each batch is one actor call.
    address (Optional[str]): A running cluster to join ("auto", "ray://host:10001",
        "host:6379"), or None to start a local one.
    window (Optional[int]): Texts per Ray dataset; None: RAY_WINDOW_TEXTS.
    settings (Optional[ScoreSettings]): What the actors score; None: nothing.
    """

    name = "ray"

    def __init__(
        self,
        model: str,
        num_workers: int = 1,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        batch_size: int = 256,
        address: Optional[str] = None,
        window: Optional[int] = None,
        settings: Optional[ScoreSettings] = None,
    ) -> None:
        self.ray = require_ray()
        self.settings = settings
        self.model = model
        self.num_workers = num_workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.batch_size = batch_size
        self.window = window or RAY_WINDOW_TEXTS
        # A caller (a test, a notebook) that started Ray keeps its cluster; one
        # started here is shut down by close().
        self.owns_ray = not self.ray.is_initialized()
        if self.owns_ray:
            self.join(address)
        context = self.ray.data.DataContext.get_current()
        self.context = context
        self.saved = (context.execution_options.preserve_order, context.enable_progress_bars)
        # Output must come back in input order: that is what a shard is.
        context.execution_options.preserve_order = True
        context.enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    def join(self, address: Optional[str]) -> None:
        """Start a local cluster, or join the one at `address`, with a clear error if refused.

        address (Optional[str]): The cluster, or None to start a local one.
        """
        if address is not None and AUTH_MODE_ENV not in os.environ and any(os.environ.get(k) for k in AUTH_TOKEN_ENVS):
            # Ray uses a token given in the environment for an explicit address only
            # in token mode: a token given without the mode is meant to be used.
            os.environ[AUTH_MODE_ENV] = "token"
        try:
            self.ray.init(address=address, include_dashboard=False, log_to_driver=False)
        except Exception as err:  # Ray raises several types here (ConnectionError, AuthenticationError, ...)
            if address is None:
                raise
            raise ConnectionError(f"Cannot join the Ray cluster at {address}: {causes(err)}\n{AUTH_HINT}") from err

    def windows(self, batches: Iterator[Batch]) -> Iterator[List[Batch]]:
        """Group batches into windows of about `window` texts."""
        window: List[Batch] = []
        n_texts = 0
        for batch in batches:
            window.append(batch)
            n_texts += len(batch)
            if n_texts >= self.window:
                yield window
                window, n_texts = [], 0
        if window:
            yield window

    def run(self, batches: Iterator[Batch]) -> Iterator[BatchAnnotations]:
        """Tag batches, in order.

        batches (Iterator[List[str]]): Non-empty batches of texts.
        YIELDS (List[Dict[str, Any]]): Each batch's annotations, text by text.
        """
        for window in self.windows(batches):
            # One row per batch, one row per actor call: Ray Data cuts its own
            # batches across rows, and the batches must be the caller's (see tagging).
            rows = [{"texts": json.dumps(batch, ensure_ascii=False)} for batch in window]
            dataset = self.ray.data.from_items(rows).map_batches(
                BatchAnnotator,
                fn_constructor_kwargs={
                    "model": self.model,
                    "threads": int(self.cpus_per_worker),
                    "use_gpu": self.gpus_per_worker > 0,
                    "scores": None if self.settings is None else self.settings.to_dict(),
                },
                batch_size=1,
                concurrency=self.num_workers,
                num_cpus=self.cpus_per_worker,
                num_gpus=self.gpus_per_worker,
            )
            for row in dataset.iter_rows():
                yield json.loads(row["entities"])

    def close(self) -> None:
        """Restore Ray Data's settings; shut down the cluster if this engine started it."""
        self.context.execution_options.preserve_order, self.context.enable_progress_bars = self.saved
        if self.owns_ray:
            self.ray.shutdown()
