"""Entities of a Doc as plain, JSON- and Arrow-friendly records."""
from typing import TYPE_CHECKING, Any, Dict, List

if TYPE_CHECKING:  # only for the type hints: importing this module must stay light
    from spacy.tokens import Doc

# The fields of one entity, in the order they are written. The component can
# score its entities (its `confidence` setting), but annotate does not write
# those scores yet, so there is no "score" field: a field that is always missing
# would only mislead.
ENTITY_FIELDS = ("start", "end", "label", "text")

Entity = Dict[str, Any]


def doc_entities(doc: "Doc") -> List[Entity]:
    """The entities of a tagged Doc, with character offsets.

    doc (Doc): A Doc that went through the pipeline.
    RETURNS (List[Dict[str, Any]]): One dict per entity: `start` and `end` (character
        offsets into the text, end exclusive), `label` and `text`.
    """
    return [
        {"start": ent.start_char, "end": ent.end_char, "label": ent.label_, "text": ent.text}
        for ent in doc.ents
    ]
