"""The shared typer app that every command of the package registers on, and its error exit."""
from typing import NoReturn

import typer
from wasabi import msg

COMMAND = "python -m spacy_bilstm_crf"

app = typer.Typer(
    name="spacy_bilstm_crf",
    help="Commands of the spacy-bilstm-crf project: data conversion, evaluation reports, deployment.",
    no_args_is_help=True,
    add_completion=False,
    # The commands' docstrings are their --help. Rendered as Markdown, paragraphs
    # are re-wrapped to the terminal (rich mode would keep the docstrings' line
    # breaks) and `code` shows without its backticks. So: in command docstrings,
    # a one-line first paragraph (the summary in the command list), single
    # backticks for code, and no RST markup.
    rich_markup_mode="markdown",
)


def fail(title: str, detail: str) -> NoReturn:
    """Print an error and exit with status 1, like spaCy's CLI.

    The detail is echoed as is (wasabi would wrap it), so "file, line N" stays on one line.
    """
    msg.fail(title)
    typer.echo(detail)
    raise typer.Exit(code=1)
