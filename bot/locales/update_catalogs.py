"""Re-extract the English source strings and merge them into the Khmer and Chinese catalogs.

    python -m bot.locales.update_catalogs          # update the .po files, list what is missing
    python -m bot.locales.update_catalogs --check  # write nothing; exit 1 if anything is missing

Existing translations are kept; new strings are added with an empty translation (fill them in
and run again, or run the catalog tests). Strings no longer in the code are kept at the end of
the file as obsolete ``#~`` entries (ignored at runtime) so a translation is not lost when a
string is reworded; delete them once they are of no use.

Source strings are ``_("...")`` (including ``ui._("...")``) and ``p_("...")`` calls in
handlers/ and bot/. A string kept untranslated and translated later through a variable must
still be marked with a no-op ``_`` where it is written, or it is not extracted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po

from bot.i18n import DEFAULT_LANGUAGE, LOCALES_DIR, SUPPORTED_LANGUAGES

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIRS = ("handlers", "bot")
METHOD_MAP = [("**.py", "python")]
KEYWORDS: dict[str, Any] = {"_": None, "p_": None}
COMMENT_TAGS = ("Translators:",)
LANGUAGES = tuple(language for language in SUPPORTED_LANGUAGES if language != DEFAULT_LANGUAGE)
PROJECT, VERSION = "topup-bot", "0.1.0"


def catalog_path(language: str, locales_dir: Path = LOCALES_DIR) -> Path:
    return locales_dir / language / "LC_MESSAGES" / "messages.po"


def extract_messages(root: Path = PROJECT_ROOT) -> Any:
    """A template Catalog of every marked source string, with its file:line locations."""
    template = Catalog(project=PROJECT, version=VERSION, fuzzy=False)
    for directory in SOURCE_DIRS:
        for filename, lineno, message, comments, context in extract_from_dir(
                str(root / directory), METHOD_MAP, keywords=KEYWORDS,
                comment_tags=COMMENT_TAGS, strip_comment_tags=True):
            if not isinstance(message, str) or not message:
                continue  # _(variable): translated at runtime, its literals are marked elsewhere
            location = (f"{directory}/{Path(filename).as_posix()}", lineno)
            template.add(message, locations=[location], auto_comments=comments,
                         context=context)
    return template


def source_ids(root: Path = PROJECT_ROOT) -> set[str]:
    return {str(message.id) for message in extract_messages(root) if message.id}


def read_catalog(path: Path, language: str) -> Any:
    with path.open("rb") as handle:
        return read_po(handle, locale=language, abort_invalid=True)


def missing(catalog: Any) -> list[str]:
    """Message ids with no usable translation (empty or fuzzy: the runtime ignores both)."""
    return [str(message.id) for message in catalog
            if message.id and (not message.string or message.fuzzy)]


def merge(language: str, template: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """The catalog at ``path`` updated from ``template``: (catalog, added ids, obsoleted ids)."""
    if path.exists():
        catalog = read_catalog(path, language)
    else:
        catalog = Catalog(locale=language, project=PROJECT, version=VERSION, fuzzy=False)
    before = {str(message.id) for message in catalog if message.id}
    old_obsolete = dict(catalog.obsolete)
    creation_date = catalog.creation_date
    catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
    # A string that comes back gets its old translation again.
    for message in catalog:
        if message.id and not message.string and message.id in old_obsolete:
            message.string = old_obsolete[message.id].string
    after = {str(message.id) for message in catalog if message.id}
    added = [str(message.id) for message in catalog
             if message.id and str(message.id) not in before]
    removed = sorted(before - after)
    for msgid in list(catalog.obsolete):
        if msgid in after:
            del catalog.obsolete[msgid]
    if not added and not removed:
        catalog.creation_date = creation_date  # no churn in the header when nothing changed
    return catalog, added, removed


def render(catalog: Any) -> bytes:
    buffer = BytesIO()
    write_po(buffer, catalog, width=100, sort_output=False, include_previous=False)
    return buffer.getvalue()


def update(root: Path = PROJECT_ROOT, locales_dir: Path = LOCALES_DIR, *,
           write: bool = True, out: Any = None) -> int:
    """Merge the source strings into every catalog; return how many translations are missing."""
    out = out or sys.stdout
    template = extract_messages(root)
    print(f"{len(template)} source messages", file=out)
    total_missing = 0
    for language in LANGUAGES:
        path = catalog_path(language, locales_dir)
        catalog, added, removed = merge(language, template, path)
        text = render(catalog)
        changed = not path.exists() or path.read_bytes() != text
        if write and changed:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(text)
        todo = missing(catalog)
        total_missing += len(todo)
        state = ("written" if write else "would change") if changed else "unchanged"
        print(f"\n{language}: {path} ({state}): {len(added)} new, {len(removed)} now obsolete, "
              f"{len(todo)} to translate", file=out)
        for msgid in todo:
            print(f"  missing: {msgid!r}", file=out)
        for msgid in removed:
            print(f"  obsolete: {msgid!r}", file=out)
    return total_missing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.locales.update_catalogs",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a translation is missing")
    args = parser.parse_args(argv)
    todo = update(write=not args.check)
    return 1 if args.check and todo else 0


if __name__ == "__main__":
    raise SystemExit(main())
