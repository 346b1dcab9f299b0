"""The embedded default corpus: English ↔ X sentence pairs from the system's gettext catalogs.

Every Linux system ships thousands of human translations of program messages under /usr/share/locale.
`build_gettext_corpus` turns them into a corpus directory (see `xlm_jax.data.corpus`):

    OUT/para/{l1}-{l2}.{l1}, OUT/para/{l1}-{l2}.{l2}   line-aligned pairs, l1 < l2 (e.g. de-en.de / de-en.en)
    OUT/mono/{lang}.txt                              the target sides; mono/en.txt is every kept English msgid
    OUT/stats.json                                    pairs per language, catalogs read, time taken

    python -m xlm_jax.data.gettext OUT_DIR [--langs de fr …] [--domains … | --exclude-domains …]
                                           [--locale-dirs …] [--min-pairs N] [--force]

OUT_DIR must be new, empty or an earlier output of this command (which is replaced); another directory is
refused unless --force (`xlm_jax.core.outputs`).

Rules (chosen so that what survives reads like natural sentences):
- Locale names keep their language part: pt_BR and pt_PT → pt, de_CH → de, nb_NO → nb. Exceptions:
  no → nb, mo → ro, zh_TW / zh_HK / zh_Hant → zh_Hant (traditional script kept apart from zh, as CC-100 does).
  English targets (en, en_GB, en@quot …) and other `@` variants (sr@latin, ca@valencia …) are skipped.
- Singular and plural forms are both used: msgid ↔ msgstr[0], msgid_plural ↔ msgstr[1]. The catalog header,
  untranslated entries and translations identical to the English are skipped. (msgfmt leaves fuzzy
  entries out of a .mo, so none are seen.)
- Cleaning, on both sides: markup tags (<b>, <span …>) are removed and entities unescaped; format
  directives (%s, %5.2f, %1$s, %(name)s, {0}, {name}, $1, ${var}, Qt's %1) are removed; accelerators
  (_File, &Open, ~Save, the CJK "(_F)") are removed; control characters become spaces; whitespace is
  collapsed. Multi-line messages are split into lines and kept only when both sides have the same number
  of lines (translators often reflow text, so unequal line counts cannot be aligned).
- A pair is dropped when the English has fewer than 2 words or 8 characters, when either side is mostly
  not letters (< 50 % letters among non-space characters: paths, options, numbers), or when it contains
  a URL / e-mail address.
- ISO catalogs (iso_639, iso_3166, iso_4217, iso_15924 …) are lists of names, not sentences: excluded by
  default (`--exclude-domains` default `iso_*`); pass `--exclude-domains` with no value to keep them.
- Pairs are de-duplicated per language; a language with fewer than --min-pairs pairs is left out.
- Mono files group sentences by catalog: a blank line separates catalogs (documents).
"""

from __future__ import annotations

import fnmatch
import functools
import html
import json
import os
import re
import shutil
import struct
import time
import unicodedata
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from xlm_jax.core import outputs
from xlm_jax.core.processes import worker_pool
from xlm_jax.core.errors import ArgumentParser, UserError, check_range, exit_on_user_error, positive_int

DEFAULT_LOCALE_DIRS = ("/usr/share/locale", "/usr/share/locale-langpack", "/usr/local/share/locale")
DEFAULT_EXCLUDE_DOMAINS = ("iso_*",)
DEFAULT_MIN_PAIRS = 100
MIN_ENGLISH_WORDS = 2
MIN_ENGLISH_CHARS = 8
MIN_LETTER_FRACTION = 0.5

_LOCALE_EXCEPTIONS = {"no": "nb", "mo": "ro", "zh_TW": "zh_Hant", "zh_HK": "zh_Hant", "zh_Hant": "zh_Hant"}


def normalize_locale(name: str) -> str | None:
    """Locale directory name → corpus language code, or None when the locale is skipped (see module doc)."""
    name = name.split(".")[0]  # "de_DE.UTF-8" → "de_DE"
    if "@" in name:
        return None
    if name in _LOCALE_EXCEPTIONS:
        return _LOCALE_EXCEPTIONS[name]
    lang = name.split("_")[0].lower()
    lang = _LOCALE_EXCEPTIONS.get(lang, lang)
    if lang == "en" or not re.fullmatch(r"[a-z]{2,3}", lang):
        return None
    return lang


# ----------------------------------------------------------------------------------------- .mo parsing


def parse_mo(data: bytes) -> list[tuple[str, list[str]]]:
    """GNU .mo bytes → [(msgid, [msgstr forms])]; plural entries give msgid "singular\\0plural"."""
    if len(data) < 28:
        raise ValueError("file too short for a .mo catalog")
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        raise ValueError("not a .mo catalog (bad magic number)")
    _, count, orig_at, trans_at = struct.unpack(order + "4I", data[4:20])
    raw = []
    for i in range(count):
        olen, ooff = struct.unpack_from(order + "2I", data, orig_at + 8 * i)
        tlen, toff = struct.unpack_from(order + "2I", data, trans_at + 8 * i)
        raw.append((data[ooff : ooff + olen], data[toff : toff + tlen]))
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":  # the header carries the charset the rest is encoded in
            match = re.search(rb"charset=([\w.-]+)", msgstr)
            if match:
                charset = match.group(1).decode("ascii", "replace")
            break
    try:
        "".encode(charset)
    except LookupError:
        charset = "utf-8"
    entries = []
    for msgid, msgstr in raw:
        if msgid == b"":
            continue
        entries.append((msgid.decode(charset, "replace"), msgstr.decode(charset, "replace").split("\0")))
    return entries


# ------------------------------------------------------------------------------------------- cleaning

_TAG = re.compile(r"</?[A-Za-z][\w:-]*(?:\s+[^<>]*)?/?>")
_FORMAT = re.compile(
    r"%\([\w.-]+\)[-+ #0]*\d*(?:\.\d+)?[a-zA-Z]"  # %(name)s
    r"|%\d+\$[-+ #0]*\d*(?:\.\d+)?(?:hh|ll|[hlLqjzt])?[a-zA-Z]"  # %1$s
    r"|%[-+ #0'_^]*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|ll|[hlLqjzt]|I64|I32)?[diouxXeEfFgGaAcsSpn]"  # %5.2f %lu
    r"|%[lL]?\d+"  # Qt's %1, %L1
    r"|%%"
    r"|\{[\w.:!\[\]-]*\}"  # {0} {name} {0:d}
    r"|\$\{\w+\}|\$\w+"  # ${var} $1 $NAME
)
_CJK_ACCEL = re.compile(r"[(（]\s*[_&~]?[A-Za-z0-9]\s*[)）]")
_ACCEL_MARK = r"(?:[_~]|&(?![a-zA-Z]+;|#\d+;))"  # an '&' that starts an entity (&amp;) is no accelerator
_ACCEL = re.compile(rf"(?<![\w&]){_ACCEL_MARK}(?=[^\W\d_])|(?<=[^\W\d_]){_ACCEL_MARK}(?=[^\W\d_])")
_URLISH = re.compile(r"://|www\.|\w@\w+\.\w|\.(?:html?|org|com|net)\b")
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # exactly Unicode category Cc
_EMPTY_QUOTES = re.compile(r"[(\[]\s*[)\]]|(['\"‘’‚“”„«»「」『』‹›])\s*(['\"‘’‚“”„«»「」『』‹›])")
# What removing "%ld.%03ld s" or "at %X/%X" leaves behind: punctuation runs with no word attached.
_ORPHAN_PUNCT = re.compile(r"(?<=[:=(])[.,/:]+|(?<!\S)[.,/:;=|]+(?=\s|$)")
_LETTER = re.compile(r"[^\W\d_]")
# The vowel signs of Devanagari, Thai, Arabic … are combining marks, not letters, yet belong to words.
_MARK = re.compile("[" + "".join(chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c))[0] == "M") + "]")


@functools.lru_cache(maxsize=1 << 18)  # the same English msgid recurs in every language's catalog
def clean_text(text: str) -> str:
    """One line of a message → plain prose: no markup, format directives, accelerators or control chars."""
    text = _TAG.sub(" ", text)
    text = _CJK_ACCEL.sub("", text)
    text = _FORMAT.sub("", text)
    # Only one accelerator per message is meaningful; a string with several '_' is an identifier, not a label.
    if len(_ACCEL.findall(text)) == 1:
        text = _ACCEL.sub("", text)
    text = html.unescape(text)
    text = _CONTROL.sub(" ", text)
    # Removing "%s" from "Could not open '%s'" leaves empty quotes / brackets behind.
    text = _EMPTY_QUOTES.sub("", text)
    text = _ORPHAN_PUNCT.sub("", text)
    text = re.sub(r"\s+([,.;:!?])(?=\s|$)", r"\1", text)
    return _SPACE.sub(" ", text).strip(" ,;:")


def mostly_letters(text: str) -> bool:
    """At least MIN_LETTER_FRACTION of the non-space characters are letters (or combining marks)."""
    n_chars = len(text) - sum(text.count(c) for c in " \t\u00a0")
    needed = MIN_LETTER_FRACTION * n_chars
    letters = _LETTER.subn("", text)[1]  # subn counts without building a list
    if letters >= needed:  # the common case; the mark count below is slower
        return n_chars > 0
    return letters + _MARK.subn("", text)[1] >= needed


@functools.lru_cache(maxsize=1 << 18)
def keep_english(text: str) -> bool:
    return (
        len(text) >= MIN_ENGLISH_CHARS
        and len(text.split()) >= MIN_ENGLISH_WORDS
        and mostly_letters(text)
        and not _URLISH.search(text)
    )


def keep_translation(text: str, english: str) -> bool:
    return (
        len(text) >= 2
        and mostly_letters(text)
        and text != english
        and not _URLISH.search(text)
    )


def message_pairs(msgid: str, msgstr: str) -> list[tuple[str, str]]:
    """One (English, translation) message → cleaned line pairs that pass the filters (maybe none)."""
    if not msgstr.strip() or msgstr == msgid:
        return []
    en_lines = [line for line in msgid.splitlines() if line.strip()]
    tr_lines = [line for line in msgstr.splitlines() if line.strip()]
    if len(en_lines) != len(tr_lines):
        return []
    pairs = []
    for en, tr in zip(en_lines, tr_lines):
        en = clean_text(en)
        if keep_english(en):  # checked first: it is cached, and most drops happen here
            tr = clean_text(tr)
            if keep_translation(tr, en):
                pairs.append((en, tr))
    return pairs


def catalog_pairs(entries: list[tuple[str, list[str]]]) -> list[tuple[str, str]]:
    """Parsed .mo entries → cleaned pairs, using singular and plural forms."""
    pairs = []
    for msgid, forms in entries:
        msgid = msgid.split("\x04", 1)[-1]  # drop the msgctxt prefix
        english = msgid.split("\0")
        pairs += message_pairs(english[0], forms[0])
        if len(english) > 1 and len(forms) > 1:
            pairs += message_pairs(english[1], forms[1])
    return pairs


# ------------------------------------------------------------------------------------- catalog search


@dataclass(frozen=True)
class Catalog:
    path: str
    locale: str
    lang: str
    domain: str


def find_catalogs(
    locale_dirs: list[str],
    langs: list[str] | None = None,
    domains: list[str] | None = None,
    exclude_domains: list[str] | None = None,
) -> list[Catalog]:
    """Every {dir}/{locale}/LC_MESSAGES/{domain}.mo that the language and domain filters keep, sorted."""
    catalogs = []
    for root in locale_dirs:
        for path in sorted(Path(root).glob("*/LC_MESSAGES/*.mo")):
            locale, domain = path.parts[-3], path.stem
            lang = normalize_locale(locale)
            if lang is None or (langs and lang not in langs):
                continue
            if domains and not any(fnmatch.fnmatchcase(domain, d) for d in domains):
                continue
            if exclude_domains and any(fnmatch.fnmatchcase(domain, d) for d in exclude_domains):
                continue
            catalogs.append(Catalog(str(path), locale, lang, domain))
    return catalogs


def _read_catalog(catalog: Catalog) -> tuple[Catalog, list[tuple[str, str]], str | None]:
    try:
        return catalog, catalog_pairs(parse_mo(Path(catalog.path).read_bytes())), None
    except (OSError, ValueError, struct.error) as err:
        return catalog, [], f"{catalog.path}: {err}"


# ------------------------------------------------------------------------------------------- building


def para_name(l1: str, l2: str) -> tuple[str, str, str]:
    """The corpus file stem for a pair and its two sides in file order (l1 < l2)."""
    a, b = sorted((l1, l2))
    return f"{a}-{b}", a, b


def build_gettext_corpus(
    out_dir: str | os.PathLike,
    langs: list[str] | None = None,
    domains: list[str] | None = None,
    exclude_domains: list[str] | None = DEFAULT_EXCLUDE_DOMAINS,
    locale_dirs: list[str] | None = None,
    min_pairs: int = DEFAULT_MIN_PAIRS,
    workers: int | None = None,
    force: bool = False,
) -> dict:
    """Extract the corpus into out_dir (replaced atomically) and return its statistics (also in stats.json).

    `out_dir` must be new, empty or an earlier output of this function; another directory is a UserError unless
    `force` (then it is replaced, its files deleted)."""
    out = outputs.check_dir(out_dir, "data.gettext", force=force, legacy="stats.json")
    start = time.perf_counter()
    check_range("--min-pairs", min_pairs, 1, integer=True)
    if workers is not None:
        check_range("--workers", workers, 1, integer=True)
    searched = list(locale_dirs or DEFAULT_LOCALE_DIRS)
    existing = [d for d in searched if Path(d).is_dir()]
    catalogs = find_catalogs(existing, langs, domains, exclude_domains)
    if not catalogs:
        raise UserError(
            f"no gettext catalogs (*/LC_MESSAGES/*.mo) found in {', '.join(searched)}"
            + (f" for languages {langs}" if langs else "")
            + (f" in domains {domains}" if domains else "")
            + "; pass --locale-dirs DIR, or give your own corpus directory (mono/{lang}.txt, para/{l1}-{l2}.{l1})"
            " to the trainer / `python -m xlm_jax.preprocess CORPUS_DIR` instead"
        )
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        with worker_pool(workers) as pool:  # no fork once JAX runs threads: see core.processes
            results = pool.map(_read_catalog, catalogs, chunksize=16)
    else:
        results = [_read_catalog(c) for c in catalogs]

    # lang → {(en, tr): first domain}; dicts keep insertion order, so the output is deterministic.
    pairs: dict[str, dict[tuple[str, str], str]] = defaultdict(dict)
    catalogs_used: dict[str, set[str]] = defaultdict(set)
    unreadable = []
    for catalog, found, error in results:
        if error:
            unreadable.append(error)
        for pair in found:
            pairs[catalog.lang].setdefault(pair, catalog.domain)
        if found:
            catalogs_used[catalog.lang].add(catalog.locale + "/" + catalog.domain)
    kept = {lang: p for lang, p in sorted(pairs.items()) if len(p) >= min_pairs}
    if langs:
        missing = sorted(set(langs) - set(kept))
        if missing:
            have = ", ".join(f"{lang} ({len(p)})" for lang, p in sorted(pairs.items()))
            raise UserError(
                f"languages {missing} have fewer than --min-pairs {min_pairs} pairs in the catalogs under "
                f"{', '.join(existing)}; pairs found: {have or 'none'}"
            )
    if not kept:
        damaged = f" ({len(unreadable)} of them unreadable, e.g. {unreadable[0]})" if unreadable else ""
        raise UserError(
            f"no language has at least --min-pairs {min_pairs} pairs in {len(catalogs)} catalogs{damaged} under "
            f"{', '.join(existing)}; lower --min-pairs or widen --domains"
        )

    english_by_domain: dict[str, dict[str, None]] = defaultdict(dict)
    stats_langs = {}
    tmp = outputs.staging_dir(out)
    try:
        (tmp / "para").mkdir(parents=True)
        (tmp / "mono").mkdir()
        for lang, lang_pairs in kept.items():
            ordered = sorted(lang_pairs.items(), key=lambda item: item[1])  # group by domain, stable
            stem, l1, l2 = para_name("en", lang)
            sides = {"en": [en for (en, _), _ in ordered], lang: [tr for (_, tr), _ in ordered]}
            for side in (l1, l2):
                (tmp / "para" / f"{stem}.{side}").write_text("\n".join(sides[side]) + "\n", encoding="utf-8")
            mono_docs: dict[str, dict[str, None]] = defaultdict(dict)
            for (en, tr), domain in ordered:
                mono_docs[domain][tr] = None
                english_by_domain[domain][en] = None
            _write_mono(tmp / "mono" / f"{lang}.txt", mono_docs)
            stats_langs[lang] = {
                "pairs": len(lang_pairs),
                "mono_sentences": sum(len(d) for d in mono_docs.values()),
                "catalogs": len(catalogs_used[lang]),
            }
        english_seen: set[str] = set()
        english_docs = {}
        for domain in sorted(english_by_domain):
            fresh = [s for s in english_by_domain[domain] if s not in english_seen]
            english_seen.update(fresh)
            english_docs[domain] = dict.fromkeys(fresh)
        _write_mono(tmp / "mono" / "en.txt", english_docs)
        stats = {
            "languages": stats_langs,
            "n_languages": len(stats_langs),
            "total_pairs": sum(s["pairs"] for s in stats_langs.values()),
            "english_sentences": len(english_seen),
            "catalogs_read": len(catalogs),
            "unreadable": unreadable,
            "dropped_languages": {lang: len(p) for lang, p in pairs.items() if lang not in kept},
            "locale_dirs": existing,
            "options": {
                "langs": langs,
                "domains": domains,
                "exclude_domains": list(exclude_domains or []),
                "min_pairs": min_pairs,
            },
            "seconds": round(time.perf_counter() - start, 2),
        }
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        outputs.move_into_place(tmp, out, "data.gettext")
    except BaseException as err:
        # Reported before the partial output is removed: the free space is what the write had.
        reported = outputs.as_user_error(err, out, "could not write the output; what was there is unchanged")
        shutil.rmtree(tmp, ignore_errors=True)
        if reported is not err:
            raise reported from err
        raise
    return stats


def _write_mono(path: Path, docs: dict[str, dict[str, None]]) -> None:
    blocks = ["\n".join(sentences) for sentences in docs.values() if sentences]
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def format_table(stats: dict) -> str:
    rows = [f"{'lang':<8} {'pairs':>8} {'catalogs':>9}"]
    for lang, s in sorted(stats["languages"].items(), key=lambda kv: -kv[1]["pairs"]):
        rows.append(f"{lang:<8} {s['pairs']:>8} {s['catalogs']:>9}")
    rows.append(
        f"{'total':<8} {stats['total_pairs']:>8}   ({stats['n_languages']} languages, "
        f"{stats['english_sentences']} English sentences, {stats['catalogs_read']} catalogs, {stats['seconds']} s)"
    )
    if stats.get("unreadable"):  # damaged catalogs are skipped, not fatal: say so (all are listed in stats.json)
        rows.append(f"warning: {len(stats['unreadable'])} catalogs could not be read and were skipped, e.g. "
                    f"{stats['unreadable'][0]}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m xlm_jax.data.gettext", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--langs", nargs="+", help="language codes to keep (default: all)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--domains", nargs="+", help="only these catalogs (glob patterns, e.g. 'gtk*' coreutils)")
    group.add_argument(
        "--exclude-domains",
        nargs="*",
        default=list(DEFAULT_EXCLUDE_DOMAINS),
        help="skip these catalogs (glob patterns; default: iso_*; give no value to keep all)",
    )
    parser.add_argument("--locale-dirs", nargs="+", default=list(DEFAULT_LOCALE_DIRS))
    parser.add_argument("--min-pairs", type=positive_int, default=DEFAULT_MIN_PAIRS)
    parser.add_argument("--workers", type=positive_int, default=None)
    parser.add_argument("--force", action="store_true",
                        help="replace OUT_DIR even if it holds files this command did not write (they are deleted)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        stats = build_gettext_corpus(
            args.out_dir,
            langs=args.langs,
            domains=args.domains,
            exclude_domains=None if args.domains else args.exclude_domains,
            locale_dirs=args.locale_dirs,
            min_pairs=args.min_pairs,
            workers=args.workers,
            force=args.force,
        )
    print(format_table(stats))
    print(f"wrote {args.out_dir}")


if __name__ == "__main__":
    main()
