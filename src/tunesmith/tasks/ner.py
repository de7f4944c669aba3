"""Named-entity recognition (sequence labelling) with a softmax or CRF head.

Words are labelled on their first sub-token only. With ``--head crf`` the encoder's per-token scores
(emissions) of those first sub-tokens feed tunesmith's own CRF (:mod:`tunesmith.tasks.crf`), whose
Viterbi decoding can never produce a sequence the tag scheme forbids (``I-PER`` after ``O``).

The saved ``model/`` is a plain ``AutoModelForTokenClassification`` (its logits are the emissions);
the CRF's weights sit beside it in ``crf.safetensors`` and the scheme in ``tunesmith_ner.json``.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.config import RunConfig
from tunesmith.data.sequences import PreparedTagged, TaggedSentences, prepare_tagging, read_tagged
from tunesmith.errors import UserError
from tunesmith.evaluate.metrics import entity_metrics
from tunesmith.tasks.base import Encoded, EncodedDataset, Task, load_pretrained
from tunesmith.tasks.crf import CRF, allowed_transitions
from tunesmith.tasks.inference import autocast_context, length_sorted_batches

META_FILE = "tunesmith_ner.json"
CRF_FILE = "crf.safetensors"
IGNORE = -100
WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]", re.UNICODE)


def first_subtoken_positions(word_starts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a ``[B, L]`` 0/1 mask of word starts: ``[B, W]`` positions of the starts in order, and their mask."""
    starts = word_starts.bool()
    counts = starts.sum(dim=1)
    width = max(int(counts.max()), 1)
    # a stable sort puts the start positions first, in their original order
    order = torch.argsort((~starts).to(torch.int8), dim=1, stable=True)[:, :width]
    mask = torch.arange(width, device=starts.device)[None, :] < counts[:, None]
    return order, mask


class CRFTagger(torch.nn.Module):
    """A token-classification encoder (emissions) followed by a CRF over first sub-tokens."""

    def __init__(self, encoder: torch.nn.Module, labels: Sequence[str], scheme: str):
        super().__init__()
        self.encoder = encoder
        allowed, start, end = allowed_transitions(labels, scheme)
        self.crf = CRF(len(labels), allowed, start, end)
        self.base_model_prefix = getattr(encoder, "base_model_prefix", "model")

    @property
    def config(self):
        return self.encoder.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        kwargs = {"attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        emissions = self.encoder(input_ids=input_ids, **kwargs).logits
        out = {"logits": emissions}
        if labels is not None:
            order, mask = first_subtoken_positions(labels.ne(IGNORE))
            gathered = emissions.gather(1, order.unsqueeze(-1).expand(-1, -1, emissions.size(-1)))
            tags = labels.gather(1, order).clamp(min=0)
            out["loss"] = self.crf(gathered, tags, mask, reduction="token_mean")
        return out

    def save_pretrained(self, path, **kwargs) -> None:
        """The encoder as a plain transformers model, the CRF beside it."""
        from safetensors.torch import save_file

        self.encoder.save_pretrained(path, **kwargs)
        save_file({k: v.contiguous() for k, v in self.crf.state_dict().items()}, str(Path(path) / CRF_FILE))

    def decode(self, emissions: torch.Tensor, word_starts: torch.Tensor) -> list[list[int]]:
        order, mask = first_subtoken_positions(word_starts)
        gathered = emissions.gather(1, order.unsqueeze(-1).expand(-1, -1, emissions.size(-1)))
        paths, _ = self.crf.decode(gathered, mask)
        return paths


# ---------------------------------------------------------------- data and model


def prepare(config: RunConfig) -> PreparedTagged:
    return prepare_tagging(config.data, seed=config.training.seed)


def _label_kwargs(labels: Sequence[str]) -> dict[str, Any]:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)), "label2id": {t: i for i, t in enumerate(labels)}}


def build_model(config: RunConfig, data: PreparedTagged):
    from transformers import AutoModelForTokenClassification

    tokenizer, encoder = load_pretrained(config, AutoModelForTokenClassification, **_label_kwargs(data.labels))
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"model {config.model.model!r} has no fast tokenizer; NER needs one to map sub-tokens to words")
    if config.model.head == "crf":
        return tokenizer, CRFTagger(encoder, data.labels, data.scheme)
    return tokenizer, encoder


def encode_words(tokenizer, token_lists: Sequence[Sequence[str]], max_length: int) -> tuple[list[dict[str, Any]], list[int]]:
    """Tokenize pre-split words; each feature carries ``word_starts`` and the kept word count."""
    enc = tokenizer([list(t) for t in token_lists], is_split_into_words=True, truncation=True, max_length=max_length)
    features, kept = [], []
    for i in range(len(token_lists)):
        word_ids = enc.word_ids(i)
        starts, seen = [], set()
        for w in word_ids:
            starts.append(1 if w is not None and w not in seen else 0)
            if w is not None:
                seen.add(w)
        feat = {k: enc[k][i] for k in enc}
        feat["word_starts"] = starts
        feat["_word_ids"] = word_ids
        features.append(feat)
        kept.append(len(seen))
    return features, kept


def encode(tokenizer, data: PreparedTagged, config: RunConfig) -> Encoded:
    label_id = {t: i for i, t in enumerate(data.labels)}
    splits, truncated = {}, {}
    for split, part in (("train", data.train), ("eval", data.eval)):
        features, kept = encode_words(tokenizer, part.tokens, config.data.max_length)
        truncated[split] = sum(k < len(t) for k, t in zip(kept, part.tokens, strict=True))
        for feat, tags in zip(features, part.tags, strict=True):
            word_ids = feat.pop("_word_ids")
            # the labels themselves mark the first sub-tokens (-100 elsewhere): no other field is needed
            starts = feat.pop("word_starts")
            feat["labels"] = [label_id[tags[w]] if s else IGNORE for w, s in zip(word_ids, starts, strict=True)]
        splits[split] = EncodedDataset(features)
    return Encoded(splits["train"], splits["eval"], truncated)


class TaggingCollator:
    """Pads a batch: ids with the pad id, masks with 0, labels with -100."""

    def __init__(self, tokenizer):
        self.pad_id = tokenizer.pad_token_id or 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        pads = {"input_ids": self.pad_id, "labels": IGNORE}
        batch = {}
        for key in features[0]:
            if key.startswith("_"):
                continue
            pad = pads.get(key, 0)
            batch[key] = torch.tensor([list(f[key]) + [pad] * (width - len(f[key])) for f in features], dtype=torch.long)
        return batch


def make_loss(config: RunConfig, data: PreparedTagged) -> Callable | None:
    return None  # both heads compute their own loss (cross-entropy over first sub-tokens, or CRF NLL)


def make_preprocess_logits(model) -> Callable:
    """Turn emissions into predicted tag ids at first sub-token positions, inside the Trainer's eval loop."""

    def preprocess(logits, labels):
        logits = logits[0] if isinstance(logits, tuple) else logits
        starts = labels.ne(IGNORE)
        pred = torch.full_like(labels, IGNORE)
        if isinstance(model, CRFTagger):
            order, mask = first_subtoken_positions(starts)
            for b, path in enumerate(model.decode(logits, starts)):
                pred[b, order[b, : len(path)]] = torch.tensor(path, device=labels.device)
        else:
            pred = torch.where(starts, logits.argmax(dim=-1), pred)
        return pred

    return preprocess


def make_compute_metrics(data: PreparedTagged) -> Callable:
    labels, scheme = data.labels, data.scheme

    def compute(pred) -> dict[str, float]:
        gold, guess = [], []
        for p_row, g_row in zip(pred.predictions, pred.label_ids, strict=True):
            keep = g_row != IGNORE
            gold.append([labels[i] for i in g_row[keep]])
            guess.append([labels[i] if i >= 0 else "O" for i in p_row[keep]])
        m = entity_metrics(gold, guess, scheme)
        return {k: m[k] for k in ("f1", "precision", "recall", "macro_f1", "token_accuracy")}

    return compute


# ---------------------------------------------------------------- inference


@torch.inference_mode()
def tag_words(
    model, tokenizer, token_lists: Sequence[Sequence[str]], labels: Sequence[str], *, max_length: int, batch_size: int, precision: str
):
    """Predicted tags and their probabilities for each word (words cut by max_length get ``O``, probability 0)."""
    model.eval()
    device = next(model.parameters()).device
    features, _ = encode_words(tokenizer, token_lists, max_length)
    collate = TaggingCollator(tokenizer)
    tags: list[list[str]] = [[] for _ in token_lists]
    probs: list[list[float]] = [[] for _ in token_lists]
    for idx in length_sorted_batches([len(f["input_ids"]) for f in features], batch_size):
        batch = {k: v.to(device) for k, v in collate([features[i] for i in idx]).items()}
        starts = batch.pop("word_starts")
        encoder = model.encoder if isinstance(model, CRFTagger) else model
        with autocast_context(precision, device):
            emissions = encoder(**batch).logits.float()
        order, mask = first_subtoken_positions(starts)
        gathered = emissions.gather(1, order.unsqueeze(-1).expand(-1, -1, emissions.size(-1)))
        soft = gathered.softmax(-1)
        if isinstance(model, CRFTagger):
            paths, _ = model.crf.decode(gathered, mask)
        else:
            paths = [row[: int(m.sum())].tolist() for row, m in zip(gathered.argmax(-1), mask, strict=True)]
        for b, i in enumerate(idx):
            path = paths[b]
            n_words = len(token_lists[i])
            tags[i] = [labels[t] for t in path] + ["O"] * (n_words - len(path))
            probs[i] = [float(soft[b, j, t]) for j, t in enumerate(path)] + [0.0] * (n_words - len(path))
    return tags, probs


def entity_spans(tags: Sequence[str], probs: Sequence[float]) -> list[tuple[int, int, str, float]]:
    """(first word, last word, type, mean probability) for each entity in a BIO/BIOES tag sequence."""
    spans, start, etype = [], None, None

    def close(end: int):
        if start is not None:
            spans.append((start, end, etype, float(np.mean(probs[start : end + 1]))))

    for i, tag in enumerate(tags):
        prefix, _, kind = tag.partition("-")
        if tag == "O" or prefix in ("B", "S") or (prefix in ("I", "E") and kind != etype):
            close(i - 1)
            start, etype = (i, kind) if tag != "O" else (None, None)
        if prefix in ("S", "E") and start is not None:
            close(i)
            start, etype = None, None
    close(len(tags) - 1)
    return spans


def split_words(text: str) -> list[tuple[str, int, int]]:
    """Words and punctuation with their character offsets."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def _baseline_tags(train: TaggedSentences, token_lists: Sequence[Sequence[str]]) -> list[list[str]]:
    """Most frequent training tag of each (lower-cased) word; unseen words get O. The floor to beat."""
    counts: dict[str, Counter] = {}
    for tokens, tags in zip(train.tokens, train.tags, strict=True):
        for tok, tag in zip(tokens, tags, strict=True):
            counts.setdefault(tok.lower(), Counter())[tag] += 1
    out = []
    for tokens in token_lists:
        raw = [counts[t.lower()].most_common(1)[0][0] if t.lower() in counts else "O" for t in tokens]
        out.append(raw)
    return out


def _score(model, tokenizer, data: TaggedSentences, labels, scheme, config: RunConfig, precision: str):
    tags, probs = tag_words(
        model,
        tokenizer,
        data.tokens,
        labels,
        max_length=config.data.max_length,
        batch_size=config.training.eval_batch_size,
        precision=precision,
    )
    metrics = entity_metrics(data.tags, tags, scheme)
    records = [
        {"row": line, "tokens": toks, "gold": gold, "tags": pred}
        for line, toks, gold, pred in zip(data.lines, data.tokens, data.tags, tags, strict=True)
    ]
    return metrics, records, probs


def evaluate(model, tokenizer, data: PreparedTagged, config: RunConfig, precision: str):
    metrics, records, _ = _score(model, tokenizer, data.eval, data.labels, data.scheme, config, precision)
    base = entity_metrics(data.eval.tags, _baseline_tags(data.train, data.eval.tokens), data.scheme)
    metrics["word_lookup_baseline"] = {
        "model": "most frequent training tag per word",
        **{k: base[k] for k in ("f1", "precision", "recall", "token_accuracy")},
    }
    metrics["head"] = config.model.head
    return metrics, records


def save_extras(model_dir: Path, data: PreparedTagged) -> None:
    (Path(model_dir) / META_FILE).write_text(json.dumps({"scheme": data.scheme, "labels": data.labels}, indent=2) + "\n", encoding="utf-8")


class NERPredictor:
    """A trained tagger: entity spans with character offsets for raw text."""

    def __init__(self, model_dir: Path, config: RunConfig):
        from safetensors.torch import load_file
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        from tunesmith.training.hardware import resolve_precision

        self.config = config
        meta = json.loads((Path(model_dir) / META_FILE).read_text(encoding="utf-8"))
        self.labels, self.scheme = meta["labels"], meta["scheme"]
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        encoder = AutoModelForTokenClassification.from_pretrained(model_dir)
        self.model: torch.nn.Module = encoder
        if (Path(model_dir) / CRF_FILE).is_file():
            tagger = CRFTagger(encoder, self.labels, self.scheme)
            tagger.crf.load_state_dict(load_file(str(Path(model_dir) / CRF_FILE)))
            self.model = tagger
        self.model.eval()
        self.precision = resolve_precision("auto")

    def predict(self, texts: Sequence[str], *, batch_size: int | None = None) -> list[dict[str, Any]]:
        words = [split_words(t) for t in texts]
        token_lists = [[w for w, _, _ in ws] or [""] for ws in words]
        tags, probs = tag_words(
            self.model,
            self.tokenizer,
            token_lists,
            self.labels,
            max_length=self.config.data.max_length,
            batch_size=batch_size or self.config.training.eval_batch_size,
            precision=self.precision,
        )
        out = []
        for text, ws, tg, pr in zip(texts, words, tags, probs, strict=True):
            entities = [
                {"text": text[ws[a][1] : ws[b][2]], "type": kind, "start": ws[a][1], "end": ws[b][2], "score": score}
                for a, b, kind, score in entity_spans(tg[: len(ws)], pr[: len(ws)])
            ]
            out.append({"entities": entities, "tokens": [w for w, _, _ in ws], "tags": tg[: len(ws)]})
        return out

    def evaluate(self, source: str, *, text_col: str | None, label_col: str | None):
        data = read_tagged(source, encoding=self.config.data.encoding, text_col=text_col, label_col=label_col)
        unknown = sorted({t for tags in data.tags for t in tags} - set(self.labels))
        if unknown:
            raise UserError(
                f"{source}: tag(s) {', '.join(unknown[:10])} were never seen in training; this run knows {', '.join(self.labels)}"
            )
        metrics, records, _ = _score(self.model, self.tokenizer, data, self.labels, self.scheme, self.config, self.precision)
        return metrics, records


TASK = Task(
    name="ner",
    summary="named entities: a tag per word (BIO/BIOES), CRF or softmax head",
    metrics={"f1": True, "precision": True, "recall": True, "macro_f1": True, "token_accuracy": True},
    prepare=prepare,
    build_model=build_model,
    encode=encode,
    make_loss=make_loss,
    make_compute_metrics=make_compute_metrics,
    evaluate=evaluate,
    load_predictor=NERPredictor,
    save_extras=save_extras,
    peft_task_type="TOKEN_CLS",
    make_collator=TaggingCollator,
    make_preprocess_logits=make_preprocess_logits,
    default_head_lr=1e-3,
)
