"""Extending a SentencePiece vocabulary for a new language or script (the model rows that go with it:
`xlm_jax.models.vocab_extension`).

Two halves, used by `python -m xlm_jax.tokenizer extend` and by continued pretraining (`xlm_jax.pretrain.adapt`):

- `extend_tokenizer(base, inputs, add, output)` trains a SentencePiece model of the base's type on the new text,
  takes the pieces the base lacks and appends them to the base's ModelProto. Every existing piece keeps its id,
  so in the fairseq layout (`xlm_jax.tokenizer`: spm id + 1, `<s> <pad> </s> <unk>` first, `<mask>` last) the
  old ids 0 .. V-2 keep their meaning, the new pieces take V-1 .. V'-2 and `<mask>` moves from V-1 to V'-1.
- `extend_embeddings(params, config, base, extended, layout)` gives a model the rows of the new ids.

Which pieces. The candidates are the new model's NORMAL pieces that the base does not hold (in any type).
Single characters come first, so that no character the new model covers stays `<unk>`, then the longer pieces
in the new model's own order (unigram: most probable first; BPE: merge order, so a merge's parts always come
before it). The first `add` of them are appended.

Their scores. A unigram model segments by Viterbi over the sum of piece scores (log probabilities), so the new
pieces keep the log probabilities the new model gave them: a word written only in the new script has no base
piece to compete with, and is cut exactly as the new model alone would cut it. A BPE model applies merges by
score, highest first, so the new pieces are scored below every base piece, in their own merge order: base
merges keep their priority. A piece holding a character the base lacks can never match text without that
character, so text without the new script is segmented exactly as before. Pieces made only of characters the
base already has (a Latin program name inside Georgian text, a new language in a known script) can change how
base-language text is split: the report counts the sentences whose segmentation changed on `--check-input` text,
and `--new-characters-only` keeps only pieces that hold a character the base cannot represent, which makes the
base languages' segmentation provably unchanged.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from xlm_jax.core.errors import UserError, check_range
from xlm_jax.core.outputs import check_file_output, check_overlap, write_file, write_json
from xlm_jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer, read_sentences
from xlm_jax.core.textfiles import check_corpus_file

# Id layouts, named as `data.tlm_layout` names them (not the model family): "xlmr" is fairseq's (every
# SentencePiece vocabulary of this project, XLM-family models trained here included), "xlm" the original XLM
# models' fastBPE dictionary (<mask> at id 5).
LAYOUTS = ("xlmr", "xlm")
MAX_TRAIN_PIECES = 1 << 30  # SentencePiece's vocab_size is an int32; no text supports more pieces anyway
MAX_TRAIN_SENTENCES = 1_000_000
HELD_OUT_EVERY = 10  # every 10th line of the new text is held out of training, for the report
SPECIAL_IDS = (BOS_ID, PAD_ID, EOS_ID, UNK_ID)


# ------------------------------------------------------------------------------------------- statistics


def _sentences(sentences) -> list[str]:
    if isinstance(sentences, str | bytes) or not isinstance(sentences, Iterable):
        raise UserError(f"sentences must be a list of str, got {type(sentences).__name__} {sentences!r:.60}")
    sentences = list(sentences)
    if not sentences:
        raise UserError("sentences is empty: give at least one sentence")
    return sentences


def _stats(encoded: list[np.ndarray]) -> dict:
    pieces = sum(len(ids) for ids in encoded)
    unk = sum(int((ids == UNK_ID).sum()) for ids in encoded)
    return {"sentences": len(encoded), "pieces": pieces, "pieces_per_sentence": pieces / len(encoded),
            "unk": unk, "unk_share": unk / pieces if pieces else 0.0}


def tokenization_stats(tokenizer: Tokenizer, sentences: Iterable[str]) -> dict:
    """Pieces per sentence of `sentences` (str each) under `tokenizer`, without `<s>` / `</s>`.

    -> {"sentences": int, "pieces": int, "pieces_per_sentence": float, "unk": int (pieces that are <unk>),
    "unk_share": float (unk / pieces)}. Special-token strings in the text stay text. Raises UserError when
    `sentences` is a str, empty, or holds anything but str."""
    return _stats(tokenizer.encode_batch_pieces_ids(_sentences(sentences), special_tokens=False))


def compare_tokenization(base: Tokenizer, extended: Tokenizer, sentences: Iterable[str]) -> dict:
    """How an extension changed the segmentation of `sentences`: {"before": stats, "after": stats (both as
    `tokenization_stats`), "changed_sentences": int (sentences whose ids differ), "new_pieces_used": int (distinct
    added pieces that occur: ids >= len(base) - 1, <mask> excluded), "ratio": after / before pieces per sentence
    (None when there were no pieces before)}. Raises UserError like `tokenization_stats`."""
    sentences = _sentences(sentences)
    old = base.encode_batch_pieces_ids(sentences, special_tokens=False)
    new = extended.encode_batch_pieces_ids(sentences, special_tokens=False)
    before, after = _stats(old), _stats(new)
    changed = sum(not np.array_equal(a, b) for a, b in zip(old, new))
    every = np.concatenate(new) if new else np.zeros(0, np.int32)
    # The old <mask> id is the first added piece; the new <mask> is no added piece.
    used = np.unique(every[(every >= len(base) - 1) & (every < extended.mask_id)])
    ratio = after["pieces_per_sentence"] / before["pieces_per_sentence"] if before["pieces"] else None
    return {"before": before, "after": after, "changed_sentences": changed, "new_pieces_used": len(used),
            "ratio": ratio}


# ------------------------------------------------------------------------------------------- the tokenizer


def _model_proto(tokenizer: Tokenizer):
    from sentencepiece import sentencepiece_model_pb2 as pb

    proto = pb.ModelProto()
    proto.ParseFromString(tokenizer.sp.serialized_model_proto())
    return proto


def _read_inputs(paths: Sequence[str], flag: str) -> dict[str, list[str]]:
    """{path: its non-blank lines}; UserError for a missing, unreadable, binary or empty file."""
    out = {}
    for path in paths:
        try:
            check_corpus_file(path)
            lines = read_sentences([Path(path)])
        except UserError as err:
            raise UserError(f"{flag}: {err}") from None
        except OSError as err:
            raise UserError(f"{flag} {path}: cannot be read ({err.strerror or err})") from None
        if not lines:
            raise UserError(f"{flag} {path}: holds no text (only blank lines)")
        out[path] = lines
    return out


def _train_new_model(base_proto, sentences: list[str], vocab_size: int, seed: int, verbose: bool):
    """A SentencePiece ModelProto of the base's type trained on `sentences`, which are already in the base's
    normalised form (so the new model trains with the identity rule and its pieces match what the base sees)."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb

    spec = base_proto.trainer_spec
    with tempfile.TemporaryDirectory(prefix="xlm_jax-extend-") as tmp:
        sample = Path(tmp) / "text.txt"
        sample.write_text("\n".join(sentences) + "\n", encoding="utf-8")
        options = dict(
            input=str(sample), model_prefix=str(Path(tmp) / "new"), vocab_size=vocab_size,
            model_type=pb.TrainerSpec.ModelType.Name(spec.model_type).lower(),
            character_coverage=spec.character_coverage or 0.9995,
            normalization_rule_name="identity",
            add_dummy_prefix=base_proto.normalizer_spec.add_dummy_prefix,
            remove_extra_whitespaces=base_proto.normalizer_spec.remove_extra_whitespaces,
            split_by_unicode_script=spec.split_by_unicode_script, split_by_number=spec.split_by_number,
            split_by_whitespace=spec.split_by_whitespace, split_digits=spec.split_digits,
            treat_whitespace_as_suffix=spec.treat_whitespace_as_suffix,
            max_sentencepiece_length=spec.max_sentencepiece_length or 16,
            hard_vocab_limit=False,  # a small text may support fewer pieces than asked: take what it has
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, seed_sentencepiece_size=1000000,
            # A random sample of at most this many lines, as SentencePiece's own trainer recommends for large text.
            input_sentence_size=MAX_TRAIN_SENTENCES, shuffle_input_sentence=True,
            num_threads=os.cpu_count() or 1, minloglevel=0 if verbose else 2,
        )
        spm.set_random_generator_seed(seed)  # process-wide; the trainer has no seed option of its own
        for _ in range(2):
            try:
                spm.SentencePieceTrainer.train(**options)
                break
            except (RuntimeError, ValueError) as err:
                # Fewer pieces than the text's characters: retry with room for all of them.
                required = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(err))
                if not required or options["vocab_size"] > int(required.group(1)):
                    raise UserError(f"SentencePiece could not learn pieces from the new text: "
                                    f"{' '.join(str(err).split())}") from None
                options["vocab_size"] = int(required.group(1)) + vocab_size
        proto = pb.ModelProto()
        proto.ParseFromString((Path(tmp) / "new.model").read_bytes())
    return proto


def _candidates(base: Tokenizer, base_proto, new_proto, new_characters_only: bool) -> list:
    """The new model's NORMAL pieces the base lacks (only those holding a character the base cannot represent when
    `new_characters_only`): single characters first, then the rest in the new model's order (module docstring)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    have = {p.piece for p in base_proto.pieces}
    fresh = [p for p in new_proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL and p.piece not in have]
    if new_characters_only:
        sp = no_prefix_processor(base)
        unknown = {c for c in {c for p in fresh for c in p.piece} if c != "▁" and sp.unk_id() in sp.encode(c)}
        fresh = [p for p in fresh if unknown.intersection(p.piece)]
    chars = [p for p in fresh if len(p.piece) == 1]
    return chars + [p for p in fresh if len(p.piece) > 1]


def no_prefix_processor(base: Tokenizer):
    """The base model without the dummy "▁" prefix and whitespace trimming, so that a piece's surface string is
    split exactly as written ("ab" inside a word, " ab" at a word start) rather than as a new word."""
    import sentencepiece as spm

    proto = _model_proto(base)
    proto.normalizer_spec.add_dummy_prefix = False
    proto.normalizer_spec.remove_extra_whitespaces = False
    sp = spm.SentencePieceProcessor()
    sp.LoadFromSerializedProto(proto.SerializeToString())
    return sp


def extended_model_proto(base: Tokenizer, sentences: Sequence[str], add: int, seed: int = 0,
                         verbose: bool = False, new_characters_only: bool = False, source: str = "the new text"):
    """-> (ModelProto of the base with up to `add` new pieces appended, the appended pieces as str).

    `sentences`: the new language's text (list of str). `new_characters_only`: append only pieces that hold a
    character the base cannot represent (one it encodes as `<unk>`); no such piece can match text the base
    segments without `<unk>`, so that text keeps its exact segmentation. Raises UserError when `add` is not a
    positive integer, the base is neither a unigram nor a BPE model, or the text yields no piece the base lacks
    (none holding a new character, with `new_characters_only`); `source` names the text in those messages."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    check_range("--add", add, 1, integer=True)
    base_proto = _model_proto(base)
    kind = pb.TrainerSpec.ModelType.Name(base_proto.trainer_spec.model_type).lower()
    if kind not in ("unigram", "bpe"):
        raise UserError(f"--base {base.path} is a SentencePiece {kind} model; only unigram and bpe models can be "
                        "extended")
    # The base's own normalisation, once: the new pieces are learned on exactly the strings the base segments.
    normalized = [t.replace("▁", " ").strip() for t in base.sp.normalize([base.normalize(s) for s in sentences])]
    normalized = [t for t in normalized if t]
    if not normalized:
        raise UserError(f"{source} holds nothing but whitespace once normalised")
    # Room for `add` new pieces besides the overlap with the base and the 3 reserved pieces.
    new_proto = _train_new_model(base_proto, normalized, min(2 * add + 3, MAX_TRAIN_PIECES), seed, verbose)
    chosen = _candidates(base, base_proto, new_proto, new_characters_only)[:add]
    if not chosen and new_characters_only:
        raise UserError(f"{source} yields no piece holding a character that {base.path} cannot represent "
                        "(--new-characters-only): its script is already covered; leave out --new-characters-only "
                        "to add pieces of known characters (this can change how base-language text is split)")
    if not chosen:
        raise UserError(f"{source} yields no piece that {base.path} lacks: its {len(base_proto.pieces)} pieces "
                        "already cover it; extend with text in the new language or script")
    lowest = min(p.score for p in base_proto.pieces if p.type == pb.ModelProto.SentencePiece.NORMAL)
    for rank, piece in enumerate(chosen):
        # Unigram: the new model's log probability; BPE: below every base merge, in the new model's order.
        score = piece.score if kind == "unigram" else lowest - 1.0 - rank
        base_proto.pieces.append(pb.ModelProto.SentencePiece(piece=piece.piece, score=score,
                                                             type=pb.ModelProto.SentencePiece.NORMAL))
    base_proto.trainer_spec.vocab_size = len(base_proto.pieces)
    return base_proto, [p.piece for p in chosen]


def _write_bytes(path: Path, data: bytes) -> None:
    write_file(path, lambda tmp: tmp.write_bytes(data))


def extend_tokenizer(base: str | os.PathLike, inputs: Sequence[str], add: int, output: str, *,
                     check_inputs: Sequence[str] = (), report: str | None = None, force: bool = False,
                     seed: int = 0, verbose: bool = False, new_characters_only: bool = False) -> dict:
    """`python -m xlm_jax.tokenizer extend`: write `output` (PATH.model, and PATH.vocab beside it), the base
    SentencePiece model with up to `add` pieces learned on `inputs` appended (only pieces holding a character
    the base cannot represent when `new_characters_only`: see `extended_model_proto`); returns the report (also
    written as JSON to `report` when given).

    Report: {"base", "output", "requested", "added" (int), "pieces" (the added pieces), "mask_id": [old, new],
    "texts": {name: `compare_tokenization`}} where the names are "held-out new text" (every 10th line of
    `inputs`, which the new model does not train on; the training text itself when there are fewer than 10
    lines, and the name says so) and each `check_inputs` file.

    Raises UserError, before any training and with nothing written, for: `add` not a positive integer; an
    output (PATH.model, PATH.vocab, `report`) that exists without `force`, is a directory, is the base or an
    input, or whose name does not end in .model; a base that is missing or not a SentencePiece model of the
    fairseq layout; an input or check input that is missing, unreadable, binary or empty; and, after training,
    text that yields no piece the base lacks."""
    check_range("--add", add, 1, integer=True)
    if not str(output).endswith(".model"):
        raise UserError(f"--output {output} must end in .model (PATH.vocab is written beside it)")
    if not inputs:
        raise UserError("--input: give at least one file of the new language's text")
    outputs = [Path(output), Path(str(output)[: -len(".model")] + ".vocab")] + ([Path(report)] if report else [])
    if len({p.resolve() for p in outputs}) < len(outputs):
        raise UserError(f"--report {report} is one of the tokenizer's own output files; choose another path")
    for path in outputs:
        check_file_output(path, force=force, flag="--force")
        for src, what in [(base, "--base model")] + [(i, "--input") for i in [*inputs, *check_inputs]]:
            if Path(src).is_file():  # a directory is no valid input: that input's own check names it
                check_overlap(path, src, what)
    tokenizer = Tokenizer.load(base)
    new_text = _read_inputs(inputs, "--input")
    checks = _read_inputs(check_inputs, "--check-input")

    lines = [s for sents in new_text.values() for s in sents]
    if len(lines) >= HELD_OUT_EVERY:
        held_out = lines[HELD_OUT_EVERY - 1 :: HELD_OUT_EVERY]
        train = [s for i, s in enumerate(lines) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
        held_name = "held-out new text"
    else:
        held_out, train, held_name = lines, lines, "new text (all of it: < 10 lines)"
    proto, pieces = extended_model_proto(tokenizer, train, add, seed, verbose, new_characters_only,
                                         source=f"--input {', '.join(map(str, inputs))}")

    model_path, vocab_path = outputs[0], outputs[1]
    model_path.parent.mkdir(parents=True, exist_ok=True)
    _write_bytes(vocab_path, "".join(f"{p.piece}\t{p.score:g}\n" for p in proto.pieces).encode("utf-8"))
    _write_bytes(model_path, proto.SerializeToString())  # last: a .model on disk always has its .vocab
    extended = Tokenizer.load(model_path)
    # The promise the layout rests on, checked on what was written.
    assert all(extended.sp.id_to_piece(i) == tokenizer.sp.id_to_piece(i) for i in range(tokenizer.sp.get_piece_size()))
    result = {
        "base": str(base), "output": str(output), "requested": add, "added": len(pieces), "pieces": pieces,
        "new_characters_only": new_characters_only,
        "mask_id": [tokenizer.mask_id, extended.mask_id],
        "texts": {held_name: compare_tokenization(tokenizer, extended, held_out)}
                 | {path: compare_tokenization(tokenizer, extended, sents) for path, sents in checks.items()},
    }
    if report:
        write_json(Path(report), result)
    return result


def format_report(result: dict) -> str:
    """The report of `extend_tokenizer` as the lines the command prints."""
    n, first = result["added"], result["mask_id"][0]
    width = min(60, max(20, *(len(name) for name in result["texts"])))
    lines = [f"added {n} piece{'s' if n > 1 else ''} (ids {first}..{first + n - 1})"
             + (f", fewer than the {result['requested']} asked: the new text supports no more"
                if n < result["requested"] else "")
             + f"; <mask> moved from id {result['mask_id'][0]} to {result['mask_id'][1]}",
             f"{'text':<{width}} {'sentences':>9} {'pieces/sent before':>18} {'after':>7} {'ratio':>6} "
             f"{'<unk> before':>12} {'after':>6} {'changed':>8} {'new used':>8}"]
    for name, c in result["texts"].items():
        b, a = c["before"], c["after"]
        shown = name if len(name) <= width else "…" + name[1 - width :]
        lines.append(f"{shown:<{width}} {b['sentences']:>9} {b['pieces_per_sentence']:>18.2f} "
                     f"{a['pieces_per_sentence']:>7.2f} {'-' if c['ratio'] is None else format(c['ratio'], '.3f'):>6} {b['unk']:>12} {a['unk']:>6} "
                     f"{c['changed_sentences']:>8} {c['new_pieces_used']:>8}")
    return "\n".join(lines)


