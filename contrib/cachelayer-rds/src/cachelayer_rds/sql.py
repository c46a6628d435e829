"""The configured query: checked to be one read-only SELECT, and ``:key`` made a placeholder."""

from __future__ import annotations

import re
from typing import List, Tuple

import attrs

__all__ = ["Query", "QueryError", "parse_query"]

PARAMETER = "key"

# Words that make a statement write, lock or run other statements. A SELECT holding one outside
# quotes is refused: a data-modifying CTE (WITH d AS (DELETE ...) SELECT ...), SELECT ... INTO,
# SELECT ... FOR UPDATE. A column of that name can still be used, quoted ("update", `update`).
_FORBIDDEN = frozenset(
    {
        "ALTER",
        "ANALYZE",
        "CALL",
        "COPY",
        "CREATE",
        "DEALLOCATE",
        "DELETE",
        "DO",
        "DROP",
        "EXECUTE",
        "GRANT",
        "HANDLER",
        "INSERT",
        "INTO",
        "LOAD",
        "LOCK",
        "MERGE",
        "OUTFILE",
        "PREPARE",
        "REVOKE",
        "TRUNCATE",
        "UPDATE",
        "VACUUM",
    }
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)?\$")


class QueryError(ValueError):
    """The configured query is not one read-only SELECT with a ``:key`` parameter."""


@attrs.frozen
class Query:
    """A checked query, split around its ``:key`` placeholders.

    ``parts`` are the SQL text between placeholders (``len(parts) == uses + 1``); each driver
    joins them with its own placeholder (``$1`` for PostgreSQL).
    """

    text: str
    parts: Tuple[str, ...]

    @property
    def uses(self) -> int:
        """How many times ``:key`` appears."""
        return len(self.parts) - 1

    def joined(self, placeholder: str) -> str:
        """The SQL with every ``:key`` replaced by ``placeholder``."""
        return placeholder.join(self.parts)


def parse_query(text: str, *, dialect: str) -> Query:
    """Check ``text`` and split it at ``:key``; raise ``QueryError`` saying what is wrong.

    ``dialect`` is ``postgresql`` or ``mysql`` (which quotes and comments exist). The scan skips
    string literals, quoted identifiers and comments, so ``':key'`` in a literal is text, and a
    ``;`` inside quotes is not a second statement.
    """
    mysql = dialect == "mysql"
    parts: List[str] = []
    words: List[str] = []
    start = 0  # where the current part began
    i, n = 0, len(text)
    end = n  # a single trailing ';' is dropped
    while i < n:
        c = text[i]
        if c in "'\"" or (c == "`" and mysql):
            i = _skip_quoted(text, i, c, backslashes=mysql or _e_string(text, i))
        elif _line_comment(text, i, mysql):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif mysql and (text.startswith("/*!", i) or text.startswith("/*M!", i)):
            raise QueryError(
                "the query holds a MySQL executable comment (/*! ... */), which the server runs "
                "as SQL; write the SQL plainly"
            )
        elif text.startswith("/*", i):
            close = text.find("*/", i + 2)
            if close < 0:
                raise QueryError("a /* comment is never closed; close it with */")
            i = close + 2
        elif c == "$" and not mysql and _DOLLAR_TAG.match(text, i) and not _follows_word(text, i):
            tag = _DOLLAR_TAG.match(text, i)
            assert tag is not None
            close = text.find(tag.group(0), tag.end())
            if close < 0:
                raise QueryError(f"the dollar-quoted string {tag.group(0)} is never closed")
            i = close + len(tag.group(0))
        elif c == ";":
            if text[i + 1 :].strip() and _code_after(text[i + 1 :], mysql):
                raise QueryError(
                    "the query holds more than one statement (a ';' is followed by more SQL); "
                    "give exactly one SELECT"
                )
            end = i
            break
        elif c == ":" and text.startswith(":" + PARAMETER, i):
            after = i + 1 + len(PARAMETER)
            before_ok = i == 0 or text[i - 1] != ":"
            if before_ok and (after == n or not (text[after].isalnum() or text[after] == "_")):
                parts.append(text[start:i])
                start = i = after
                continue
            i += 1
        elif c == ":" and i + 1 < n and text[i + 1] == ":":
            i += 2  # a PostgreSQL cast (value::int)
        elif c == ":" and _WORD.match(text, i + 1) and (i == 0 or text[i - 1] != ":"):
            name = _WORD.match(text, i + 1)
            assert name is not None
            raise QueryError(
                f"unknown parameter :{name.group(0)}; the only parameter is :{PARAMETER}, "
                "bound to the key of the request"
            )
        elif _WORD.match(text, i) and not _follows_word(text, i):
            word = _WORD.match(text, i)
            assert word is not None
            words.append(word.group(0).upper())
            i = word.end()
        else:
            i += 1
    parts.append(text[start:end])
    if not words:
        raise QueryError(
            "the query is empty; give one SELECT with :key, e.g. SELECT ... WHERE k = :key"
        )
    if words[0] not in ("SELECT", "WITH"):
        raise QueryError(
            f"the query starts with {words[0]}, not SELECT or WITH; only a read-only SELECT "
            "(or WITH ... SELECT) is allowed"
        )
    forbidden = sorted({w for w in words if w in _FORBIDDEN})
    if forbidden:
        raise QueryError(
            f"the query uses {', '.join(forbidden)}, which can write, lock or run other "
            "statements; only a plain read-only SELECT is allowed (quote an identifier of that name)"
        )
    if words[0] == "WITH" and "SELECT" not in words[1:]:
        raise QueryError("the WITH query has no SELECT; give WITH ... SELECT ...")
    if len(parts) < 2:
        raise QueryError(
            f"the query has no :{PARAMETER} parameter; the request's key is bound to it, "
            f"e.g. WHERE name = :{PARAMETER}"
        )
    return Query(text=text, parts=tuple(parts))


def _skip_quoted(text: str, i: int, quote: str, *, backslashes: bool) -> int:
    """The index after the quoted token opening at ``i``; doubled quotes are escapes."""
    j, n = i + 1, len(text)
    while j < n:
        c = text[j]
        if c == "\\" and backslashes and quote != "`":
            j += 2
            continue
        if c == quote:
            if j + 1 < n and text[j + 1] == quote:
                j += 2
                continue
            return j + 1
        j += 1
    kind = "identifier" if quote in '"`' else "string"
    raise QueryError(f"a quoted {kind} opened with {quote} is never closed")


def _e_string(text: str, i: int) -> bool:
    """Whether the quote at ``i`` opens a PostgreSQL E'...' string (backslash escapes)."""
    return text[i] == "'" and i > 0 and text[i - 1] in "eE" and not _follows_word(text, i - 1)


def _follows_word(text: str, i: int) -> bool:
    return i > 0 and (text[i - 1].isalnum() or text[i - 1] in "_$")


def _line_comment(text: str, i: int, mysql: bool) -> bool:
    """Whether a line comment starts at ``i``: ``--`` (MySQL: followed by a blank) or MySQL ``#``."""
    if mysql:
        if text[i] == "#":
            return True
        return text.startswith("--", i) and (i + 2 == len(text) or text[i + 2] in " \t\r\n")
    return text.startswith("--", i)


def _code_after(rest: str, mysql: bool) -> bool:
    """Whether ``rest`` (after a ';') holds anything but blanks and comments."""
    i, n = 0, len(rest)
    while i < n:
        if rest[i].isspace():
            i += 1
        elif _line_comment(rest, i, mysql):
            nl = rest.find("\n", i)
            i = n if nl < 0 else nl + 1
        elif rest.startswith("/*", i):
            close = rest.find("*/", i + 2)
            i = n if close < 0 else close + 2
        else:
            return True
    return False
