"""A limit on how deeply the records of a JSON array may nest, applied to the text
before the streaming parser sees it.

ijson's C backend keeps the full prefix of every open container (``item.item.…``),
so a record of 100,000 ``[`` costs memory quadratic in its depth (gigabytes for a
100 KB file), and its pure-Python backend time quadratic in it. A CLUE record
nests 5 levels below the array; anything much deeper is not a CLUE record.
"""
import re
from typing import List, Optional, Set

# Containers deeper than this (the array itself is level 1) are cut from the text.
MAX_JSON_DEPTH = 32
# What replaces a cut container: a valid JSON value, so the parser can go on.
PLACEHOLDER = "0"
_IN_STRING = re.compile(r'[\\"]')
_OUTSIDE_STRING = re.compile(r'[\[\]{},"]')


class NestingGuard:
    """Filters the text of a JSON array piece by piece: a container nested deeper
    than ``max_depth`` is replaced by ``0`` (with everything inside it), and the
    index of the array item that held it is recorded in ``too_deep``, so that the
    reader reports that record instead of the parser's view of it.

    Items are numbered from 1 by counting the commas at the array's level, which
    matches the parser's count for any array it can parse.

    max_depth (int): The deepest container kept; the array is level 1.
    """

    def __init__(self, max_depth: int = MAX_JSON_DEPTH) -> None:
        self.max_depth = max_depth
        self.too_deep: Set[int] = set()
        self.record = 0  # the array item being read (1-based; 0 before the array opens)
        self._depth = 0
        self._in_string = False
        self._escape_pending = False  # a backslash ended the previous piece
        self._cut_depth: Optional[int] = None  # the level of the container being cut

    def feed(self, text: str) -> str:
        """text (str): The next piece of the file.
        RETURNS (str): The piece to parse, with too-deep containers cut.
        """
        pieces: List[str] = []
        keep_from: Optional[int] = None if self._cut_depth is not None else 0
        i = 0
        if self._escape_pending and text:
            self._escape_pending, i = False, 1
        while i < len(text):
            if self._in_string:
                match = _IN_STRING.search(text, i)
                if match is None:
                    break
                j = match.start()
                if text[j] == "\\":
                    # Skip the escaped character, which may be in the next piece.
                    self._escape_pending = j + 1 >= len(text)
                    i = j + 2
                else:
                    self._in_string, i = False, j + 1
                continue
            match = _OUTSIDE_STRING.search(text, i)
            if match is None:
                break
            j, char = match.start(), match.group()
            i = j + 1
            if char == '"':
                self._in_string = True
            elif char == ",":
                if self._depth == 1:
                    self.record += 1
            elif char in "[{":
                self._depth += 1
                if self._depth == 1:
                    self.record = 1
                if self._cut_depth is None and self._depth > self.max_depth:
                    self.too_deep.add(self.record)
                    if keep_from is not None:
                        pieces += [text[keep_from:j], PLACEHOLDER]
                    keep_from, self._cut_depth = None, self._depth
            else:  # "]" or "}"
                self._depth -= 1
                if self._cut_depth is not None and self._depth < self._cut_depth:
                    keep_from, self._cut_depth = i, None
        if keep_from is not None:
            pieces.append(text[keep_from:])
        return "".join(pieces)
