"""Command-line interface: ``python -m spacy_bilstm_crf COMMAND``.

Each submodule registers its commands on the shared typer ``app``.
"""
from ._util import app  # noqa: F401
from . import convert  # noqa: F401
from . import evaluate  # noqa: F401
from . import data  # noqa: F401
from . import deploy  # noqa: F401
from . import annotate  # noqa: F401
from . import select  # noqa: F401
from . import tasks  # noqa: F401
