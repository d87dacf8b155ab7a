"""The shared typer app that every command of the package registers on."""
import typer

COMMAND = "python -m spacy_bilstm_crf"

app = typer.Typer(
    name="spacy_bilstm_crf",
    help="Commands of the spacy-bilstm-crf project: data conversion, evaluation reports, deployment.",
    no_args_is_help=True,
    add_completion=False,
)
