"""WMT14 English-German and English-French, prepared as in Ott et al. 2018 (fairseq ``examples/translation``).

Same corpora and test sets as fairseq's ``prepare-wmt14en2de.sh --icml17`` / ``prepare-wmt14en2fr.sh``;
newstest2013 for validation (as in ``examples/scaling_nmt``); the Moses perl steps are replaced by
sacremoses normalisation (:mod:`.cleaning`), BPE by a joint sentencepiece model (:mod:`.subword`),
then ``clean-corpus-n -ratio 1.5 1 250`` and ``fairseq-preprocess --joined-dictionary``
(:mod:`.prepare`). ``raw_dir`` may already hold the archives, or their extracted files; only what is
missing is downloaded, and only when asked to. ``<out_dir>/test.ref.<tgt>`` is the untouched
newstest2014 reference for sacreBLEU.
"""
from __future__ import annotations

import gzip
import re
import tarfile
import urllib.request
from dataclasses import dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path
from typing import IO, Iterator

from .cleaning import normalize_line
from ..files import atomic_open, atomic_write_lines
from .prepare import PrepareConfig, prepare_corpus

_SEGMENT = re.compile(r"<seg[^>]*>(.*)</seg>")


@dataclass(frozen=True)
class Archive:
    url: str
    files: tuple[str, ...]  # what extracting it provides, relative to the raw folder (``.gz`` also accepted)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class WmtPair:
    target: str
    archives: tuple[Archive, ...]
    train: tuple[str, ...]  # corpus prefixes: ``<prefix>.<lang>[.gz]``
    valid: str
    test_sgm: dict[str, str]  # language -> newstest2014 file
    source: str = "en"


_STATMT = "http://statmt.org"


def _wmt14(target: str, corpora: dict[str, str]) -> WmtPair:
    """``corpora``: training-corpus prefix -> URL of its archive; dev and test sets as fairseq's scripts."""
    test = {"en": f"test-full/newstest2014-{target}en-src.en.sgm",
            target: f"test-full/newstest2014-{target}en-ref.{target}.sgm"}
    archives = (
        *(Archive(url, (f"{prefix}.en", f"{prefix}.{target}")) for prefix, url in corpora.items()),
        Archive("http://data.statmt.org/wmt17/translation-task/dev.tgz",
                ("dev/newstest2013.en", f"dev/newstest2013.{target}")),
        Archive(f"{_STATMT}/wmt14/test-full.tgz", tuple(test.values())),
    )
    return WmtPair(target, archives, train=tuple(corpora), valid="dev/newstest2013", test_sgm=test)


WMT14 = {
    "en-de": _wmt14("de", {
        "training/europarl-v7.de-en": f"{_STATMT}/wmt13/training-parallel-europarl-v7.tgz",
        "commoncrawl.de-en": f"{_STATMT}/wmt13/training-parallel-commoncrawl.tgz",
        "training/news-commentary-v9.de-en": f"{_STATMT}/wmt14/training-parallel-nc-v9.tgz",
    }),
    "en-fr": _wmt14("fr", {
        "training/europarl-v7.fr-en": f"{_STATMT}/wmt13/training-parallel-europarl-v7.tgz",
        "commoncrawl.fr-en": f"{_STATMT}/wmt13/training-parallel-commoncrawl.tgz",
        "un/undoc.2000.fr-en": f"{_STATMT}/wmt13/training-parallel-un.tgz",
        "training/news-commentary-v9.fr-en": f"{_STATMT}/wmt14/training-parallel-nc-v9.tgz",
        "giga-fren.release2.fixed": f"{_STATMT}/wmt10/training-giga-fren.tar",
    }),
}


def _find(raw_dir: Path, relative: str) -> Path:
    """``raw_dir/relative`` or its gzipped form (giga-fren ships as ``.gz``)."""
    for candidate in (raw_dir / relative, raw_dir / f"{relative}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no {relative}[.gz] in {raw_dir}")


def _has_all(raw_dir: Path, archive: Archive) -> bool:
    return all((raw_dir / f).is_file() or (raw_dir / f"{f}.gz").is_file() for f in archive.files)


def fetch_raw(pair_name: str, raw_dir: Path, download: bool = False) -> None:
    """Make sure every file of ``pair_name`` is in ``raw_dir``: extract archives, download if allowed."""
    pair, raw_dir = WMT14[pair_name], Path(raw_dir)
    missing = []
    for archive in pair.archives:
        if _has_all(raw_dir, archive):
            continue
        path = raw_dir / archive.filename
        if not path.is_file() and download:
            print(f"downloading {archive.url}", flush=True)
            with urllib.request.urlopen(archive.url) as response, atomic_open(path, "wb") as f:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
        if path.is_file():
            with tarfile.open(path) as tar:
                tar.extractall(raw_dir, filter="data")
        if not _has_all(raw_dir, archive):
            missing.append(f"{archive.filename} ({archive.url}) for {', '.join(archive.files)}")
    if missing:
        raise FileNotFoundError(
            f"WMT14 {pair_name} files missing from {raw_dir}: " + "; ".join(missing)
            + ". Put the archives (or their extracted files) there, or pass --download."
        )


def _open_text(path: Path) -> IO[str]:
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def _lines(paths: list[Path]) -> Iterator[str]:
    for path in paths:
        with _open_text(path) as f:
            for line in f:
                yield line.rstrip("\n")


def read_sgm(path: Path) -> list[str]:
    """The ``<seg>`` texts of a WMT ``.sgm`` file, as sacreBLEU reads them."""
    with open(path, encoding="utf-8") as f:
        return [match.group(1).strip() for line in f if (match := _SEGMENT.search(line))]


def _write_normalized(lines: Iterator[str], lang: str, dst: Path, workers: int) -> int:
    with Pool(workers) as pool:
        return atomic_write_lines(dst, pool.imap(partial(normalize_line, lang=lang), lines, chunksize=2000))


def split_lines(pair: WmtPair, raw_dir: Path, split: str, lang: str) -> Iterator[str]:
    """Raw lines of one side of one split, the training corpora concatenated."""
    if split == "train":
        return _lines([_find(raw_dir, f"{prefix}.{lang}") for prefix in pair.train])
    if split == "valid":
        return _lines([_find(raw_dir, f"{pair.valid}.{lang}")])
    return iter(read_sgm(raw_dir / pair.test_sgm[lang]))


def write_text_splits(pair_name: str, raw_dir: Path, text_dir: Path, workers: int = 2) -> None:
    """Normalised ``{train,valid,test}.{en,xx}`` and the raw test reference; existing files are kept."""
    pair, raw_dir, text_dir = WMT14[pair_name], Path(raw_dir), Path(text_dir)
    for split in ("train", "valid", "test"):
        for lang in (pair.source, pair.target):
            if not (text_dir / f"{split}.{lang}").is_file():
                count = _write_normalized(split_lines(pair, raw_dir, split, lang), lang,
                                          text_dir / f"{split}.{lang}", workers)
                print(f"{split}.{lang}: {count} lines", flush=True)
    reference = text_dir.parent / f"test.ref.{pair.target}"
    if not reference.is_file():
        atomic_write_lines(reference, read_sgm(raw_dir / pair.test_sgm[pair.target]))


def prepare_wmt14(pair_name: str, raw_dir: Path, out_dir: Path, download: bool = False,
                  vocab_size: int = 32000, workers: int = 2) -> Path:
    """Fetch (if allowed), normalise, learn the vocabulary, clean and binarise; returns the data-bin."""
    if pair_name not in WMT14:
        raise ValueError(f"unknown WMT14 pair {pair_name!r}; expected one of {sorted(WMT14)}")
    pair, out_dir = WMT14[pair_name], Path(out_dir)
    fetch_raw(pair_name, raw_dir, download)
    write_text_splits(pair_name, raw_dir, out_dir / "text", workers)
    config = PrepareConfig(pair.source, pair.target, vocab_size=vocab_size, workers=workers)
    data_bin = prepare_corpus(out_dir / "text", out_dir, config)
    print(f"WMT14 {pair_name}: {data_bin} (sacreBLEU reference: {out_dir / f'test.ref.{pair.target}'})")
    return data_bin
