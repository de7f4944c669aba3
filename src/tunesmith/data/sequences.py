"""Tagged sentences for sequence labelling (NER): read CoNLL or JSONL files, check the tag scheme, repair, dedupe and split.

Tags are ``O`` or ``<prefix>-<TYPE>`` (the type may hold hyphens, as in WNUT's ``B-geo-loc``), in the BIO
or BIOES scheme. Every way a file can be wrong ends in one :class:`~tunesmith.errors.UserError` naming
the file, the line and the fix; problems of one kind are collected so one message lists them all.
"""

from __future__ import annotations

import difflib
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import DataConfig
from tunesmith.data.loading import _decode, _json_type, _more_lines, _snippet, json_objects
from tunesmith.data.packaged import PACKAGED, packaged_path
from tunesmith.data.texts import _lines
from tunesmith.errors import UserError

SCHEMES: dict[str, str] = {"BIO": "BI", "BIOES": "BIES"}
"""Tag schemes and the entity prefixes each allows (besides the tag ``O``)."""

JSONL_EXTENSIONS = (".jsonl", ".ndjson", ".json-lines")
TOKEN_KEYS = ("tokens", "words")
TAG_KEYS = ("tags", "ner_tags")

_SHOWN = 5
_PREFIX_ORDER = "BIES"
_JSONL_EXAMPLE = '{"tokens": ["Paris", "is", "nice"], "tags": ["B-LOC", "O", "O"]}'
_CONLL_FIX = "write one token per line with its tag after a tab (O for a token outside any entity) and a blank line between sentences"
_REJECTED = dict.fromkeys((".parquet", ".pq", ".xlsx", ".xls", ".ods"), f"export it as JSON Lines, a sentence per line: {_JSONL_EXAMPLE}")
_REJECTED[".csv"] = "CSV holds one text per row; write one token and its tag per line (.conll) or one JSON object per sentence (.jsonl)"
_REJECTED[".json"] = f"for JSON Lines write one object per line, {_JSONL_EXAMPLE}, and name the file .jsonl"


@dataclass
class TaggedSentences:
    """Sentences as token lists with one tag per token, and the file lines they start on."""

    source: str
    tokens: list[list[str]]
    tags: list[list[str]]
    lines: list[int]
    kind: str = "conll"
    """``conll`` (token ``j`` of a sentence sits on line ``lines[i] + j``) or ``jsonl`` (a sentence per line)."""

    def __len__(self) -> int:
        """Number of sentences."""
        return len(self.tokens)

    def subset(self, idx: Sequence[int]) -> TaggedSentences:
        """The sentences at positions ``idx``, in that order."""
        tokens, tags, lines = ([column[i] for i in idx] for column in (self.tokens, self.tags, self.lines))
        return TaggedSentences(self.source, tokens, tags, lines, self.kind)

    def token_line(self, sentence: int, token: int) -> int:
        """The file line of token ``token`` of sentence ``sentence`` (both 0-based)."""
        return self.lines[sentence] + (token if self.kind == "conll" else 0)


@dataclass
class PreparedTagged:
    """Train and eval sentences ready for a tagging task, the tag set, the scheme and how they were made."""

    train: TaggedSentences
    eval: TaggedSentences
    labels: list[str]
    scheme: str
    report: dict[str, Any]


def read_tagged(source: str, *, encoding: str = "utf-8", text_col: str | None = None, label_col: str | None = None) -> TaggedSentences:
    """Read the non-empty tagged sentences of a CoNLL or JSONL file, or of a packaged tagging dataset, in file order.

    CoNLL (``.conll``/``.bio``/``.iob``/``.txt``/``.tsv`` or sniffed): a token per line, its tag after a tab (or
    spaces when the line has no tab; of more than two columns the first is the token, the last the tag), blank
    lines between sentences, ``-DOCSTART-`` lines skipped. JSONL: per line an object with a token list
    (``text_col``, else ``tokens`` or ``words``) and a tag list (``label_col``, else ``tags`` or ``ner_tags``).
    Tags are checked against a scheme by :func:`prepare_tagging`, not here.

    Raises:
        UserError: missing, empty, binary or undecodable file, a token line without a tag, a JSONL line that
            is not an object, lacks the lists or has a different number of tokens and tags.
    """
    source = str(source)
    tagging = sorted(name for name, ds in PACKAGED.items() if ds.task == "ner")
    path = Path(source)
    if source in PACKAGED and not path.exists():
        ds = PACKAGED[source]
        if ds.task != "ner":
            raise UserError(f"packaged dataset '{source}' is for {ds.task}, not for tagging; tagging datasets: {', '.join(tagging)}")
        path, text_col, label_col = packaged_path(source), text_col or ds.text_col, label_col or ds.label_col
    elif not path.exists():
        close = difflib.get_close_matches(source, tagging, n=1)
        hint = f"did you mean the packaged dataset '{close[0]}'?" if close else "or name a packaged dataset (see `tunesmith data list`)"
        raise UserError(f"file not found: {source}; check the path, {hint}")
    elif not path.is_file():
        raise UserError(f"{source} is a directory, not a data file; pass a CoNLL (.conll) or JSONL (.jsonl) file inside it")
    shown = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {shown}: {exc.strerror or exc}; check the file's permissions") from None
    if not raw:
        raise UserError(f"{shown} is empty (0 bytes); {_CONLL_FIX}, or write one JSON object per sentence such as {_JSONL_EXAMPLE}")
    text = _decode(raw, shown, encoding)
    if not text.strip():
        raise UserError(f"{shown} contains only whitespace; {_CONLL_FIX}")
    kind = _file_kind(path, shown, text)
    tokens, tags, lines = _parse_jsonl(text, shown, text_col, label_col) if kind == "jsonl" else _parse_conll(text, shown)
    if not tokens:
        raise UserError(f"{shown} holds no sentences (only -DOCSTART- lines or empty token lists); {_CONLL_FIX}")
    return TaggedSentences(source, tokens, tags, lines, kind)


def _file_kind(path: Path, shown: str, text: str) -> str:
    suffix = path.suffix.lower()
    if suffix in _REJECTED:
        raise UserError(f"{shown}: '{suffix}' files cannot hold tagged tokens; {_REJECTED[suffix]}")
    if suffix in JSONL_EXTENSIONS:
        return "jsonl"
    if suffix in (".conll", ".bio", ".iob"):
        return "conll"
    # .txt, .tsv and anything else: a first line holding a JSON object means JSON Lines.
    first = next(line for line in text.split("\n") if line.strip()).strip()
    try:
        return "jsonl" if isinstance(json.loads(first), dict) else "conll"
    except json.JSONDecodeError:
        return "conll"


def _parse_conll(text: str, shown: str) -> tuple[list[list[str]], list[list[str]], list[int]]:
    tokens, tags, lines, ragged = [], [], [], []
    in_sentence = False
    rows = text.split("\n")
    last = max(number for number, row in enumerate(rows, start=1) if row.strip())
    for number, row in enumerate(rows, start=1):
        line = row.rstrip()
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        if not fields or fields[0] == "-DOCSTART-":  # a blank or whitespace-only line ends the sentence
            in_sentence = False
            continue
        # The line is right-stripped, so a tab-separated last field (the tag) is never empty.
        if len(fields) < 2 or not fields[0]:
            ragged.append((number, line, "1 field" if len(fields) < 2 else "an empty token"))
            continue
        if not in_sentence:
            tokens.append([])
            tags.append([])
            lines.append(number)
            in_sentence = True
        tokens[-1].append(fields[0])
        tags[-1].append(fields[-1])
    if ragged:
        number, line, got = ragged[0]
        end = " (the last line of the file: was it cut short?)" if number == last else ""
        more = _more_lines([n for n, _, _ in ragged[1:]], "lines like this")
        raise UserError(f"{shown} line {number}: expected 'token<TAB>tag', got {_snippet(line)} ({got}){end}{more}; {_CONLL_FIX}")
    return tokens, tags, lines


def _parse_jsonl(text: str, shown: str, text_col: str | None, label_col: str | None) -> tuple[list[list[str]], list[list[str]], list[int]]:
    objects, bad = json_objects(text, shown, _JSONL_EXAMPLE)
    tokens, tags, lines = [], [], []
    for number, value in objects:
        token_key = text_col or next((key for key in TOKEN_KEYS if key in value), "tokens")
        tag_key = label_col or next((key for key in TAG_KEYS if key in value), "tags")
        if token_key not in value or tag_key not in value:
            want = " or ".join(f"'{key}'" for key in (token_key, tag_key) if key not in value)
            found = ", ".join(value) or "none"
            bad.append((number, f"no {want} list in the object (keys: {found}); expected {_JSONL_EXAMPLE} (keys: --text-col/--label-col)"))
            continue
        problem = _list_problem(value[token_key], value[tag_key], token_key, tag_key)
        if problem:
            bad.append((number, problem))
        elif value[token_key]:
            tokens.append(list(value[token_key]))
            tags.append([tag.strip() for tag in value[tag_key]])
            lines.append(number)
    if bad:
        bad.sort()  # JSON problems and content problems, in file order
        number, problem = bad[0]
        raise UserError(f"{shown} line {number}: {problem}{_more_lines([n for n, _ in bad[1:]], 'bad lines')}")
    return tokens, tags, lines


def _list_problem(tokens: Any, tags: Any, token_key: str, tag_key: str) -> str | None:
    for key, items in ((token_key, tokens), (tag_key, tags)):
        if not isinstance(items, list):
            return f"'{key}' must be a list, got {_json_type(items)}; expected {_JSONL_EXAMPLE}"
    if len(tokens) != len(tags):
        return f"{len(tokens)} tokens in '{token_key}' but {len(tags)} tags in '{tag_key}'; each token needs exactly one tag"
    if not all(isinstance(tok, str) and tok.strip() for tok in tokens):
        return f"'{token_key}' must hold non-empty strings, got {_snippet(json.dumps(tokens))}"
    if any(isinstance(tag, int) and not isinstance(tag, bool) for tag in tags):
        return f"'{tag_key}' holds numbers (class ids); write the tag names (B-PER, I-PER, O), mapping ids through the dataset's label list"
    if not all(isinstance(tag, str) and tag.strip() for tag in tags):
        return f"'{tag_key}' must hold non-empty strings such as B-PER or O, got {_snippet(json.dumps(tags))}"
    return None


def _split(tag: str) -> tuple[str, str] | None:
    """``("O", "")``, ``(prefix, type)`` for a tag with a prefix of BIOES, or None for anything else."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in _PREFIX_ORDER and tag[2:].strip():
        return tag[0], tag[2:]
    return None


def detect_scheme(tag_lists: Iterable[list[str]]) -> str:
    """``"BIOES"`` if any ``E-`` or ``S-`` tag occurs, else ``"BIO"``."""
    return "BIOES" if any(tag.startswith(("E-", "S-")) for tags in tag_lists for tag in tags) else "BIO"


def _violations(tags: Sequence[str], scheme: str) -> list[tuple[int, str]]:
    bioes = scheme == "BIOES"
    found: list[tuple[int, str]] = []
    open_type: str | None = None  # type of the entity a B- or I- tag left open
    prev = "O"
    for j, tag in enumerate(tags):
        prefix, kind = _split(tag) or ("O", "")
        if prefix not in SCHEMES[scheme] + "O":
            found.append((j, f"{tag} is not a {scheme} tag"))
        continues = prefix in ("I", "E") and kind == open_type
        if bioes and open_type is not None and not continues:
            found.append((j, f"{prev} is followed by {tag}; an entity goes on with I-{open_type} or ends with E-{open_type}"))
        if prefix in ("I", "E") and not continues:
            start = f"B-{kind}" + (f" (S-{kind} for one token)" if bioes else "")
            found.append((j, f"{tag} follows {prev}; an entity starts with {start}"))
        open_type = kind if prefix in ("B", "I") else None
        prev = tag
    if bioes and open_type is not None:
        found.append((len(tags) - 1, f"the sentence ends inside a {open_type} entity ({prev}); end it with E-{open_type}"))
    return found


def invalid_tags(data: TaggedSentences, scheme: str) -> list[tuple[int, int, str]]:
    """Every tag-sequence violation of ``scheme``, as ``(sentence number (1-based), token index (0-based), message)``.

    BIO: ``I-X`` must follow ``B-X`` or ``I-X``. BIOES also: ``B-X``/``I-X`` must go on with ``I-X`` or ``E-X``,
    ``E-X`` must follow ``B-X``/``I-X``, and no entity may be left open at the sentence end.
    """
    scheme = _scheme_name(scheme)
    return [(i, j, message) for i, tags in enumerate(data.tags, start=1) for j, message in _violations(tags, scheme)]


def _spans(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """Entities as ``(start, end, type)``, end exclusive, read leniently: a stray I-/E- starts one."""
    spans: list[tuple[int, int, str]] = []
    start: int | None = None
    kind = ""
    for j, tag in enumerate(tags):
        prefix, tag_kind = _split(tag) or ("O", "")
        if start is not None and not (prefix in ("I", "E") and tag_kind == kind):
            spans.append((start, j, kind))
            start = None
        if prefix in ("B", "S") or (prefix in ("I", "E") and start is None):
            start, kind = j, tag_kind
        if prefix in ("E", "S") and start is not None:
            spans.append((start, j + 1, kind))
            start = None
    if start is not None:
        spans.append((start, len(tags), kind))
    return spans


def repair_tags(tags: list[str], scheme: str) -> list[str]:
    """The tags rewritten into a valid ``scheme`` sequence, keeping every entity's tokens and type.

    BIO: an ``I-X`` after ``O`` or after another type becomes ``B-X``. BIOES: the same, and each entity
    is re-ended (``B-X O`` -> ``S-X O``, ``B-X I-X O`` -> ``B-X E-X O``). Valid input comes back
    unchanged, so the repair is idempotent. Tags that are neither ``O`` nor prefixed are kept as they are.
    """
    scheme = _scheme_name(scheme)
    out = ["O" if _split(tag) else tag for tag in tags]
    for start, end, kind in _spans(tags):
        if scheme == "BIOES" and end - start == 1:
            out[start] = f"S-{kind}"
            continue
        out[start] = f"B-{kind}"
        for j in range(start + 1, end):
            out[j] = f"I-{kind}"
        if scheme == "BIOES":
            out[end - 1] = f"E-{kind}"
    return out


def entity_counts(tag_lists: Iterable[Sequence[str]]) -> dict[str, int]:
    """Number of entities per type, sorted by type."""
    counts = Counter(kind for tags in tag_lists for _, _, kind in _spans(tags))
    return dict(sorted(counts.items()))


def _scheme_name(scheme: str) -> str:
    name = str(scheme).upper()
    if name not in SCHEMES:
        raise UserError(f"unknown tag scheme {scheme!r}; use BIO or BIOES (or auto to detect it from the tags)")
    return name


def _check_tag_format(data: TaggedSentences, scheme: str, requested: str) -> None:
    ok = SCHEMES[scheme] + "O"
    bad = [(data.token_line(i, j), t) for i, tags in enumerate(data.tags) for j, t in enumerate(tags) if (_split(t) or "?")[0] not in ok]
    if not bad:
        return
    line, tag = bad[0]
    counts = Counter(tag for _, tag in bad)
    listed = ", ".join(f"'{t}' ({n})" for t, n in counts.most_common(10))
    allowed = ", ".join(f"{p}-TYPE" for p in SCHEMES[scheme])
    if any(t.startswith(("E-", "S-")) for t in counts):
        fix = f"the file uses BIOES tags but the scheme was set to {requested}; pass --tag-scheme BIOES (or auto)"
    elif line == 1 and tag.casefold() in ("tag", "tags", "label", "labels", "ner", "ner_tag", "ner_tags"):
        fix = "line 1 looks like a header; delete it"
    else:
        fix = f"write O for tokens outside entities and {allowed} (e.g. B-PER) for entity tokens"
    raise UserError(
        f"{data.source} line {line}: tag '{tag}' is neither O nor one of {allowed} (the {scheme} scheme); "
        f"{len(bad)} such tag(s): {listed} ({_lines(sorted({n for n, _ in bad}))}); {fix}"
    )


def _raise_on_invalid(data: TaggedSentences, scheme: str) -> None:
    problems = invalid_tags(data, scheme)
    if not problems:
        return
    first: dict[int, tuple[int, str]] = {}
    for sentence, token, message in problems:
        first.setdefault(sentence, (token, message))
    shown = [
        f"sentence {s} (line {data.token_line(s - 1, j)}, token {j + 1} {data.tokens[s - 1][j]!r}): {message}"
        for s, (j, message) in list(first.items())[:_SHOWN]
    ]
    more = f"; ... {len(first) - _SHOWN} more sentences" if len(first) > _SHOWN else ""
    raise UserError(
        f"{data.source}: {len(problems)} invalid {scheme} tag sequence(s) in {len(first)} sentence(s): {'; '.join(shown)}{more}; "
        f"pass --repair-tags to fix them (a stray I- tag then starts its entity as B-), or correct the file"
    )


def _dedupe(data: TaggedSentences) -> tuple[TaggedSentences, int, int]:
    first: dict[tuple[str, ...], int] = {}
    variants: dict[tuple[str, ...], set[tuple[str, ...]]] = {}
    for i, (tokens, tags) in enumerate(zip(data.tokens, data.tags, strict=True)):
        first.setdefault(tuple(tokens), i)
        variants.setdefault(tuple(tokens), set()).add(tuple(tags))
    conflicting = sum(1 for tag_sets in variants.values() if len(tag_sets) > 1)
    return data.subset(sorted(first.values())), len(data) - len(first), conflicting


def _label_key(tag: str) -> tuple[int, str, int]:
    prefix, kind = _split(tag) or ("O", tag)
    return (0, "", 0) if tag == "O" else (1, kind, _PREFIX_ORDER.find(prefix))


def prepare_tagging(data: DataConfig, seed: int) -> PreparedTagged:
    """Load, check, repair, dedupe and split the data of a tagging run.

    Reads ``data.tag_scheme`` (auto, BIO, BIOES) and ``data.repair_tags`` where the config has them (else
    auto and False). Without ``data.eval`` a seeded random holdout of sentences is the eval side; each side
    keeps file order. ``labels`` is ``O`` then every tag seen, by entity type and prefix B, I, E, S.

    Raises:
        UserError: any read problem, tags outside the scheme, invalid tag sequences (unless repairing), fewer
            than 2 sentences on a side, no entity in training, or eval-file tags never seen in training.
    """
    options: dict[str, Any] = {"encoding": data.encoding, "text_col": data.text_col, "label_col": data.label_col}
    train = read_tagged(data.train, **options)
    evaluation = None if data.eval is None else read_tagged(data.eval, **options)
    sides = [train] if evaluation is None else [train, evaluation]
    requested = str(getattr(data, "tag_scheme", "auto") or "auto")
    scheme = detect_scheme(tags for side in sides for tags in side.tags) if requested.lower() == "auto" else _scheme_name(requested)
    for side in sides:
        _check_tag_format(side, scheme, requested)
    repaired = 0
    for side in sides:
        if not getattr(data, "repair_tags", False):
            _raise_on_invalid(side, scheme)
        fixed = [repair_tags(tags, scheme) for tags in side.tags]  # valid tags come back unchanged
        repaired += sum(a != b for old, new in zip(side.tags, fixed, strict=True) for a, b in zip(old, new, strict=True))
        side.tags = fixed
    report: dict[str, Any] = {"source": data.train, "eval_source": data.eval, "sentences_read": len(train)}
    report["tokens"] = sum(len(tokens) for tokens in train.tokens)
    removed = conflicting = 0
    if data.dedupe:
        train, removed, conflicting = _dedupe(train)
    report.update(duplicates_removed=removed, conflicting_duplicates=conflicting)
    if evaluation is None:
        n_eval = math.ceil(data.eval_fraction * len(train))
        order = np.random.default_rng(seed).permutation(len(train))
        # File order inside each side makes predictions easy to line up with the source; training shuffles anyway.
        evaluation, train = train.subset(sorted(order[:n_eval].tolist())), train.subset(sorted(order[n_eval:].tolist()))
        report["split"] = f"random holdout {data.eval_fraction * 100:g}%, seed {seed}"
    else:
        report["eval_sentences_read"] = len(evaluation)
        if data.dedupe:
            evaluation, eval_removed, _ = _dedupe(evaluation)
            report["eval_duplicates_removed"] = eval_removed
        report["split"] = "eval file"
    if len(train) < 2 or len(evaluation) < 2:
        raise UserError(
            f"{train.source}: {len(train)} training and {len(evaluation)} eval sentences ({report['split']}); each side needs at least 2; "
            "add sentences, change --eval-fraction, or give an eval file with --eval FILE"
        )
    if data.eval is not None:
        _check_eval_tags(train, evaluation)
    train_entities = entity_counts(train.tags)
    if not train_entities:
        raise UserError(f"{train.source}: all {len(train)} training sentences are tagged O only; a tagger needs entities such as B-PER")
    seen = {tag for side in (train, evaluation) for tags in side.tags for tag in tags}
    labels = sorted(seen | {"O"}, key=_label_key)
    report.update(train_size=len(train), eval_size=len(evaluation), entity_counts_train=train_entities)
    report.update(entity_counts_eval=entity_counts(evaluation.tags), repaired=repaired, scheme=scheme)
    return PreparedTagged(train=train, eval=evaluation, labels=labels, scheme=scheme, report=report)


def _check_eval_tags(train: TaggedSentences, evaluation: TaggedSentences) -> None:
    known = {tag for tags in train.tags for tag in tags}
    unseen = Counter(tag for tags in evaluation.tags for tag in tags if tag not in known)
    if not unseen:
        return
    lines = sorted({evaluation.token_line(i, j) for i, tags in enumerate(evaluation.tags) for j, tag in enumerate(tags) if tag in unseen})
    listed = ", ".join(f"'{tag}' ({n} tokens)" for tag, n in sorted(unseen.items(), key=lambda item: _label_key(item[0]))[:10])
    raise UserError(
        f"{evaluation.source}: {len(unseen)} tag(s) never seen in training: {listed}; {_lines(lines)}. "
        f"Tags in {train.source}: {', '.join(sorted(known, key=_label_key))}. Fix the eval tags or add training sentences with them"
    )
