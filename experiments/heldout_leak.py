"""Count held-out sentences that a model trained on a preprocessed directory has seen in training.

    python experiments/heldout_leak.py PREPROCESSED_DIR [--json OUT.json]

A valid / test sentence "leaks" when the same ids (the stored sentence, which is what the model sees) occur in
a train split of the same language, monolingual or either side of a pair. Every valid / test sentence is
counted, once per occurrence: each mono line and each side of each pair. Prints one line per split, language
and kind, then the total; with --json also writes the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlm_jax.data.corpus import PreprocessedCorpus  # noqa: E402
from xlm_jax.core.errors import exit_on_user_error  # noqa: E402


def sentences(corpus: PreprocessedCorpus, split: str) -> dict[tuple[str, str], list[bytes]]:
    """{(lang, "mono" | "para l1-l2"): [ids bytes of each sentence]} of one split."""
    out: dict[tuple[str, str], list[bytes]] = {}
    if split not in corpus.manifest["splits"]:
        return out
    for lang in corpus.mono_langs(split):
        arr = corpus.mono(split, lang)
        out[(lang, "mono")] = [arr.sentence(i).tobytes() for i in range(len(arr))]
    for l1, l2 in corpus.para_pairs(split):
        for lang, arr in zip((l1, l2), corpus.para(split, l1, l2)):
            out[(lang, f"para {l1}-{l2}")] = [arr.sentence(i).tobytes() for i in range(len(arr))]
    return out


def count_leaks(directory: str | Path) -> dict:
    """{"rows": [{split, lang, kind, sentences, in_train}], "heldout": n, "in_train": n}."""
    corpus = PreprocessedCorpus(directory)
    train: dict[str, set[bytes]] = {}
    for (lang, _), sents in sentences(corpus, "train").items():
        train.setdefault(lang, set()).update(sents)
    rows = []
    for split in ("valid", "test"):
        for (lang, kind), sents in sorted(sentences(corpus, split).items()):
            seen = train.get(lang, set())
            rows.append({"split": split, "lang": lang, "kind": kind, "sentences": len(sents),
                         "in_train": sum(s in seen for s in sents)})
    return {"directory": str(directory), "rows": rows, "heldout": sum(r["sentences"] for r in rows),
            "in_train": sum(r["in_train"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    with exit_on_user_error():
        result = count_leaks(args.directory)
    print(f"{'split':<6} {'lang':<5} {'kind':<12} {'sentences':>9} {'in train':>9}")
    for r in result["rows"]:
        print(f"{r['split']:<6} {r['lang']:<5} {r['kind']:<12} {r['sentences']:>9} {r['in_train']:>9}")
    share = result["in_train"] / max(result["heldout"], 1)
    print(f"{result['in_train']:,} of {result['heldout']:,} valid / test sentences ({100 * share:.1f} %) "
          "occur, as the same ids, in a train split of their language")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
