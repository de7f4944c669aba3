"""Exact and near duplicates, conflicting labels and train/eval leakage.

Near duplicates are found with MinHash locality-sensitive hashing over character 5-gram shingles of
normalised texts (case folded, punctuation dropped, digits zeroed, whitespace collapsed), then
verified with the exact shingle Jaccard similarity. Everything is vectorised with numpy: 5,000 SMS
take well under a second, where comparing every pair would take minutes.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from tunesmith.doctor.findings import MAX_EXAMPLES, Finding, excerpt

if TYPE_CHECKING:
    from tunesmith.doctor.dataset import DoctorData

SHINGLE = 5
"""Characters per shingle."""
NEAR_THRESHOLD = 0.9
"""Shingle Jaccard similarity at or above which two texts are near duplicates."""
BANDS, ROWS_PER_BAND = 10, 6
# 10 bands of 6 hashes: a pair at Jaccard 0.9 becomes a candidate with probability 1 - (1 - 0.9**6)**10 = 0.9995,
# one at 0.5 with 0.15; candidates are then verified exactly, so the misses are the only cost of LSH.
_BIG_BUCKET = 100
_BLOCK_SHINGLES = 1_000_000
_MERSENNE = np.uint64((1 << 61) - 1)
_PUNCTUATION = re.compile(r"[^\w\s]|_")
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The text as compared for duplicates: NFKC, case folded, punctuation dropped, digit runs as 0, single spaces."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _DIGITS.sub("0", _PUNCTUATION.sub(" ", text))
    return _SPACES.sub(" ", text).strip()


def shingle_hashes(texts: Sequence[str], k: int = SHINGLE) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every k-character window of every text, and each text's start offset into them.

    Texts shorter than k count as one shingle (padded with spaces). Returns ``(hashes, starts)`` with
    ``starts`` of length ``len(texts) + 1``: text ``i`` owns ``hashes[starts[i]:starts[i + 1]]``.
    """
    padded = [t.ljust(k) for t in texts]
    lengths = np.array([len(t) for t in padded], dtype=np.int64)
    codes = np.frombuffer("".join(padded).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    ends = np.cumsum(lengths)
    n_windows = lengths - k + 1
    starts = np.concatenate([[0], np.cumsum(n_windows)])
    # A polynomial rolling hash over all windows at once; uint64 arithmetic wraps, which is fine for hashing.
    total = len(codes) - k + 1
    hashes = np.zeros(max(total, 0), dtype=np.uint64)
    base = np.uint64(1_000_003)
    with np.errstate(over="ignore"):
        for j in range(k):
            hashes = hashes * base + codes[j : j + total]
    # Keep the windows that lie inside one text: window w of text i starts at ends[i] - lengths[i] + w.
    text_starts = ends - lengths
    window_starts = np.concatenate([np.arange(s, s + n) for s, n in zip(text_starts, n_windows)]) if len(texts) else np.zeros(0, np.int64)
    return hashes[window_starts], starts


def minhash_signatures(hashes: np.ndarray, starts: np.ndarray, num_perm: int = BANDS * ROWS_PER_BAND, seed: int = 1) -> np.ndarray:
    """MinHash signature of each text: for each of ``num_perm`` random hash functions, the smallest value over its shingles."""
    rng = np.random.default_rng(seed)
    # (a * h + b) mod p on 32-bit folded hashes: a, b, h < 2**32 keeps a * h + b below 2**64.
    folded = (hashes ^ (hashes >> np.uint64(32))) & np.uint64(0xFFFFFFFF)
    a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)
    n = len(starts) - 1
    signatures = np.empty((n, num_perm), dtype=np.uint64)
    first = 0
    while first < n:
        # Blocks of texts holding about a million shingles, 8 hash functions at a time: ~64 MB of work space.
        last = max(first + 1, int(np.searchsorted(starts, starts[first] + _BLOCK_SHINGLES, side="right")) - 1)
        last = min(last, n)
        block = folded[starts[first] : starts[last]]
        offsets = starts[first:last] - starts[first]
        for lo in range(0, num_perm, 8):
            hi = min(lo + 8, num_perm)
            values = (block[:, None] * a[None, lo:hi] + b[None, lo:hi]) % _MERSENNE
            signatures[first:last, lo:hi] = np.minimum.reduceat(values, offsets, axis=0)
        first = last
    return signatures


def candidate_pairs(signatures: np.ndarray, bands: int = BANDS, rows: int = ROWS_PER_BAND) -> set[tuple[int, int]]:
    """Pairs of texts that share all hashes of at least one band (LSH); a huge bucket is linked as a star."""
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        _, inverse = np.unique(block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel(), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.flatnonzero(np.diff(inverse[order])) + 1
        for bucket in np.split(order, bounds):
            if len(bucket) < 2:
                continue
            members = bucket.tolist()
            if len(members) > _BIG_BUCKET:
                pairs.update((members[0], m) for m in members[1:])
            else:
                pairs.update((members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members)))
    return pairs


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique hash arrays."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 1.0


def near_pairs(texts: Sequence[str], threshold: float = NEAR_THRESHOLD) -> dict[tuple[int, int], float]:
    """Pairs ``(i, j)``, ``i < j``, of distinct texts whose shingle Jaccard similarity is at least ``threshold``."""
    if len(texts) < 2:
        return {}
    hashes, starts = shingle_hashes(texts)
    signatures = minhash_signatures(hashes, starts)
    sets: dict[int, np.ndarray] = {}

    def shingles_of(i: int) -> np.ndarray:
        if i not in sets:
            sets[i] = np.unique(hashes[starts[i] : starts[i + 1]])
        return sets[i]

    found = {}
    for i, j in candidate_pairs(signatures):
        similarity = jaccard(shingles_of(i), shingles_of(j))
        if similarity >= threshold:
            found[(min(i, j), max(i, j))] = similarity
    return found


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


@dataclass
class DuplicateIndex:
    """Which rows of train (and eval) hold the same or nearly the same text.

    Attributes:
        keys: the distinct non-empty normalised texts.
        train_members / eval_members: key -> positions (0-based, into the loaded texts) holding it.
        cluster: key index -> id of its near-duplicate cluster (keys joined by Jaccard >= threshold).
        similarity: verified Jaccard of each near pair of keys.
    """

    keys: list[str]
    train_members: list[list[int]]
    eval_members: list[list[int]]
    cluster: list[int]
    similarity: dict[tuple[int, int], float] = field(default_factory=dict)

    def clusters(self) -> dict[int, list[int]]:
        """Cluster id -> its key indices."""
        groups: dict[int, list[int]] = defaultdict(list)
        for key, cid in enumerate(self.cluster):
            groups[cid].append(key)
        return groups

    def cluster_similarity(self, keys: list[int]) -> float:
        """Lowest verified similarity between keys of one cluster (1.0 when they share one normalised text)."""
        members = set(keys)
        values = [s for (i, j), s in self.similarity.items() if i in members and j in members]
        return min(values) if values else 1.0


def build_index(train_texts: Sequence[str], eval_texts: Sequence[str] | None = None, threshold: float = NEAR_THRESHOLD) -> DuplicateIndex:
    """Group the rows of train and eval by normalised text, and join near-duplicate normalised texts into clusters."""
    position: dict[str, int] = {}
    keys: list[str] = []
    train_members: list[list[int]] = []
    eval_members: list[list[int]] = []
    for members_of, texts in ((train_members, train_texts), (eval_members, eval_texts or [])):
        for i, text in enumerate(texts):
            key = normalise(text)
            if not key:
                continue
            if key not in position:
                position[key] = len(keys)
                keys.append(key)
                train_members.append([])
                eval_members.append([])
            members_of[position[key]].append(i)
    pairs = near_pairs(keys, threshold)
    uf = _UnionFind(len(keys))
    for i, j in pairs:
        uf.union(i, j)
    return DuplicateIndex(keys, train_members, eval_members, [uf.find(i) for i in range(len(keys))], pairs)


# ---------------------------------------------------------------- checks


def check_duplicates(data: DoctorData) -> list[Finding]:
    """Exact and near duplicates inside the training rows."""
    return [*_exact_duplicates(data), *_near_duplicates(data)]


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "0%"


def _exact_duplicates(data: DoctorData) -> list[Finding]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(data.train.texts):
        groups[text].append(i)
    repeated = sorted((g for g in groups.values() if len(g) > 1), key=lambda g: (-len(g), g[0]))
    if not repeated:
        return []
    extra = sum(len(g) - 1 for g in repeated)
    labels = data.train.labels
    examples = []
    for g in repeated[:MAX_EXAMPLES]:
        item: dict = {"rows": [data.train.rows[i] for i in g[:MAX_EXAMPLES]], "copies": len(g)}
        if labels is not None:
            item["labels"] = sorted({labels[i] for i in g})
        item["text"] = excerpt(data.train.texts[g[0]])
        examples.append(item)
    n = len(data.train)
    return [
        Finding(
            check="duplicates",
            severity="info",
            message=f"{extra:,} of {n:,} training rows ({_share(extra, n)}) repeat an earlier row exactly "
            f"({len(repeated):,} text{'s' if len(repeated) != 1 else ''} occur{'' if len(repeated) != 1 else 's'} more than once); "
            "`tunesmith train` drops the repeats by default, other tools may not",
            evidence={"duplicate_rows": extra, "unique_texts": len(groups), "repeated_texts": len(repeated), "examples": examples},
            remedy=data.train_command("--dedupe") + "  (the default: keeps the first occurrence)",
        )
    ]


def _near_duplicates(data: DoctorData) -> list[Finding]:
    index = data.duplicate_index
    texts = data.train.texts
    groups = []
    for keys in index.clusters().values():
        members = sorted(i for k in keys for i in index.train_members[k])
        distinct: dict[str, int] = {}
        for i in members:
            distinct.setdefault(texts[i], i)
        if len(distinct) > 1:
            groups.append((sorted(distinct.values()), index.cluster_similarity(keys)))
    if not groups:
        return []
    groups.sort(key=lambda g: (-len(g[0]), g[0][0]))
    redundant = sum(len(rows) - 1 for rows, _ in groups)
    examples = [
        {
            "rows": [data.train.rows[i] for i in rows[:MAX_EXAMPLES]],
            "similarity": round(similarity, 3),
            "texts": [excerpt(texts[i], 60) for i in rows[:2]],
        }
        for rows, similarity in groups[:MAX_EXAMPLES]
    ]
    n = len(data.train)
    return [
        Finding(
            check="near_duplicates",
            severity="warning",
            message=f"{len(groups):,} groups of training texts are near duplicates (same after normalising case, punctuation and digits, "
            f"or >= {NEAR_THRESHOLD:.0%} shingle overlap): {redundant:,} rows ({_share(redundant, n)}) add little and can straddle "
            "the train/eval split, inflating the eval score",
            evidence={"groups": len(groups), "redundant_rows": redundant, "examples": examples},
            remedy=f"keep one row of each group listed and delete the others from {data.train.source}; --dedupe drops only exact copies",
        )
    ]


def check_conflicting_labels(data: DoctorData) -> list[Finding]:
    """The same normalised text given different labels."""
    labels = data.train.labels
    if labels is None:
        return []
    index = data.duplicate_index
    conflicts = []
    for members in index.train_members:
        by_label: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_label[labels[i]].append(data.train.rows[i])
        if len(by_label) > 1:
            conflicts.append((members, dict(by_label)))
    if not conflicts:
        return []
    conflicts.sort(key=lambda c: (-len(c[0]), c[0][0]))
    rows = sum(len(m) for m, _ in conflicts)
    examples = [
        {
            "rows": [data.train.rows[i] for i in m[:MAX_EXAMPLES]],
            "labels": {k: v[:5] for k, v in by.items()},
            "text": excerpt(data.train.texts[m[0]]),
        }
        for m, by in conflicts[:MAX_EXAMPLES]
    ]
    return [
        Finding(
            check="conflicting_labels",
            severity="warning",
            message=f"{len(conflicts):,} texts appear with different labels ({rows:,} rows); the model is taught both answers "
            "and `tunesmith train --dedupe` keeps whichever comes first",
            evidence={"texts": len(conflicts), "rows": rows, "examples": examples},
            remedy=f"decide the right label of each text listed and make its rows in {data.train.source} agree (or delete them)",
        )
    ]


def check_leakage(data: DoctorData) -> list[Finding]:
    """Eval rows whose text, exactly or nearly, is also in the training rows."""
    if data.eval is None:
        return []
    index = data.duplicate_index
    train_exact: dict[str, list[int]] = defaultdict(list)
    for i, text in enumerate(data.train.texts):
        train_exact[text].append(i)
    exact, near = [], []
    for keys in index.clusters().values():
        train_rows = sorted(i for k in keys for i in index.train_members[k])
        if not train_rows:
            continue
        similarity = index.cluster_similarity(keys)
        for k in keys:
            for j in index.eval_members[k]:
                text = data.eval.texts[j]
                if text in train_exact:
                    exact.append((j, train_exact[text], 1.0))
                else:
                    near.append((j, train_rows, similarity if len(keys) > 1 else 1.0))
    findings = []
    n_eval = len(data.eval)
    for kind, found, severity in (("exact", exact, "error"), ("near", near, "warning")):
        if not found:
            continue
        found.sort()
        examples = [
            {
                "eval_row": data.eval.rows[j],
                "train_rows": [data.train.rows[i] for i in train_rows[:5]],
                **({"similarity": round(similarity, 3)} if kind == "near" else {}),
                **(_label_pair(data, j, train_rows[0])),
                "text": excerpt(data.eval.texts[j]),
            }
            for j, train_rows, similarity in found[:MAX_EXAMPLES]
        ]
        what = "also appear verbatim in the training data" if kind == "exact" else "nearly repeat a training text"
        findings.append(
            Finding(
                check="leakage",
                severity=severity,  # type: ignore[arg-type]
                message=f"{len(found):,} of {n_eval:,} eval rows ({_share(len(found), n_eval)}) {what}; "
                "the eval score overstates how the model does on unseen texts",
                evidence={"kind": kind, "eval_rows": len(found), "examples": examples},
                remedy=f"delete the listed rows from {data.eval.source} (or their copies from {data.train.source}) "
                "so eval holds only texts the model never trained on",
            )
        )
    return findings


def _label_pair(data: DoctorData, eval_pos: int, train_pos: int) -> dict:
    if data.eval is None or data.eval.labels is None or data.train.labels is None:
        return {}
    return {"labels": [data.eval.labels[eval_pos], data.train.labels[train_pos]]}
