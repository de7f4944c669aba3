"""A linear-chain conditional random field for sequence labelling (NER), with optional tag-scheme constraints.

The CRF scores a whole tag path instead of each token on its own::

    score(y | x) = start[y_0] + sum_t emissions[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_last]

and normalises over every path with the forward algorithm, so it can learn that ``I-PER`` follows ``B-PER``
and, given a tag scheme, is never allowed to predict ``O -> I-PER``.

Sequences in a batch are left-aligned: ``mask[b, :n_b]`` is True and the rest is padding. For word-level NER
on sub-word models, gather the first sub-token of each word into a compact, left-aligned tensor first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

# Stands in for "forbidden" in the training objective. -inf would make log-sum-exp return -inf for tags that
# no allowed path reaches yet, and its backward then computes exp(-inf - -inf) = nan; -1e4 keeps everything
# finite while exp(-1e4) is exactly 0 next to any real path, in float32 and float64 alike.
FORBIDDEN_SCORE = -1e4

SCHEMES = ("BIO", "BIOES")
REDUCTIONS = ("mean", "sum", "token_mean", "none")
_SCHEME_PREFIXES = {"BIO": ("B", "I"), "BIOES": ("B", "I", "E", "S")}


def _parse_tag(tag: str, scheme: str) -> tuple[str, str | None]:
    """Split ``"B-PER"`` into ``("B", "PER")``; ``"O"`` into ``("O", None)``."""
    if tag == "O":
        return "O", None
    prefixes = _SCHEME_PREFIXES[scheme]
    prefix, sep, entity_type = tag.partition("-")
    if not sep or prefix not in prefixes or not entity_type:
        raise ValueError(
            f"tag {tag!r} is not valid in the {scheme} scheme: expected 'O' or '<prefix>-<TYPE>' with prefix in "
            f"{list(prefixes)} (e.g. '{prefixes[0]}-PER'). Fix the label list or pick the scheme it is written in ({list(SCHEMES)})."
        )
    return prefix, entity_type


def allowed_transitions(labels: Sequence[str], scheme: str = "BIO") -> tuple[Tensor, Tensor, Tensor]:
    """Which tag transitions a tag scheme permits, as masks for :class:`CRF`.

    BIO: ``I-X`` may only follow ``B-X`` or ``I-X`` and cannot start a sequence; anything may end one.
    BIOES: ``B-X`` and ``I-X`` must continue with ``I-X`` or ``E-X``; ``E-X``, ``S-X`` and ``O`` may be followed
    by ``O``, ``B-*`` or ``S-*``; a sequence starts with ``O``, ``B-*`` or ``S-*`` and ends with ``O``, ``E-*`` or ``S-*``.

    Args:
        labels: Tag names in tag-id order, each ``"O"`` or ``"<prefix>-<TYPE>"`` (the type may contain hyphens).
        scheme: ``"BIO"`` or ``"BIOES"`` (case-insensitive).

    Returns:
        ``(allowed, allowed_start, allowed_end)``: bool tensors of shape ``[T, T]`` (indexed ``[from, to]``),
        ``[T]`` and ``[T]``.

    Raises:
        ValueError: If the scheme is unknown, a label is repeated, or a tag's prefix does not belong to the scheme.
    """
    scheme_key = scheme.upper()
    if scheme_key not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {list(SCHEMES)}")
    duplicates = sorted(label for label, count in Counter(labels).items() if count > 1)
    if duplicates:
        raise ValueError(f"labels must be distinct, but {duplicates} appear more than once in {list(labels)}")
    parsed = [_parse_tag(label, scheme_key) for label in labels]
    num_tags = len(parsed)
    allowed = torch.zeros(num_tags, num_tags, dtype=torch.bool)
    allowed_start = torch.zeros(num_tags, dtype=torch.bool)
    allowed_end = torch.zeros(num_tags, dtype=torch.bool)
    for j, (to_prefix, to_type) in enumerate(parsed):
        if scheme_key == "BIO":
            allowed_start[j] = to_prefix != "I"
            allowed_end[j] = True
        else:
            allowed_start[j] = to_prefix in ("O", "B", "S")
            allowed_end[j] = to_prefix in ("O", "E", "S")
        for i, (from_prefix, from_type) in enumerate(parsed):
            if scheme_key == "BIO":
                ok = to_prefix != "I" or (from_prefix in ("B", "I") and from_type == to_type)
            elif from_prefix in ("B", "I"):
                # Inside an open entity: the only way on is to continue or close that same entity.
                ok = to_prefix in ("I", "E") and from_type == to_type
            else:
                ok = to_prefix in ("O", "B", "S")
            allowed[i, j] = ok
    return allowed, allowed_start, allowed_end


def _no_autocast(reference: Tensor) -> torch.autocast:
    """Autocast switched off on the emissions' device, so float32 math stays float32 under bf16/fp16 autocast."""
    return torch.autocast(device_type=reference.device.type, enabled=False)


class CRF(torch.nn.Module):
    """Linear-chain CRF over ``num_tags`` tags, with learnable transition, start and end scores.

    Forbidden transitions (from :func:`allowed_transitions` or any bool masks) are replaced, not added to, at
    use time: the training objective sees :data:`FORBIDDEN_SCORE` and the parameter entries get zero gradient;
    :meth:`decode` sees ``-inf``, so a forbidden transition can never win however large the emissions are.

    All computation happens in float32 (float64 if the emissions or parameters are float64), also under
    bf16 autocast, because log-sum-exp over long sequences loses too much in half precision.

    Args:
        num_tags: Number of tags ``T``.
        allowed: Optional ``[T, T]`` bool mask, ``allowed[i, j]`` meaning tag ``j`` may follow tag ``i``.
        allowed_start: Optional ``[T]`` bool mask of tags a sequence may start with.
        allowed_end: Optional ``[T]`` bool mask of tags a sequence may end with.
    """

    def __init__(
        self,
        num_tags: int,
        allowed: Tensor | None = None,
        allowed_start: Tensor | None = None,
        allowed_end: Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"num_tags must be >= 1, got {num_tags}")
        self.num_tags = num_tags
        # Small random init, as is common for CRFs: zeros would also train, but make every path tie at first.
        self.transitions = torch.nn.Parameter(torch.empty(num_tags, num_tags).uniform_(-0.1, 0.1))
        self.start_transitions = torch.nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        self.end_transitions = torch.nn.Parameter(torch.empty(num_tags).uniform_(-0.1, 0.1))
        # Buffers, so the constraints travel with the state dict and follow .to(device).
        self.register_buffer("allowed", self._check_mask(allowed, (num_tags, num_tags), "allowed"))
        self.register_buffer("allowed_start", self._check_mask(allowed_start, (num_tags,), "allowed_start"))
        self.register_buffer("allowed_end", self._check_mask(allowed_end, (num_tags,), "allowed_end"))

    @staticmethod
    def _check_mask(mask: Tensor | None, shape: tuple[int, ...], name: str) -> Tensor:
        if mask is None:
            return torch.ones(shape, dtype=torch.bool)
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != shape:
            got = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"{name} must be a bool tensor of shape {shape}, got {got}; see allowed_transitions()")
        return mask.clone()

    def extra_repr(self) -> str:
        unconstrained = bool(self.allowed.all() and self.allowed_start.all() and self.allowed_end.all())
        return f"num_tags={self.num_tags}, constrained={not unconstrained}"

    # ----------------------------------------------------------------------------------------------- helpers
    def _compute_dtype(self, emissions: Tensor) -> torch.dtype:
        return torch.promote_types(torch.promote_types(emissions.dtype, self.transitions.dtype), torch.float32)

    def _scores(self, dtype: torch.dtype, forbidden: float) -> tuple[Tensor, Tensor, Tensor]:
        """Transition, start and end scores in ``dtype`` with forbidden entries replaced by ``forbidden``."""
        transitions = self.transitions.to(dtype).masked_fill(~self.allowed, forbidden)
        start = self.start_transitions.to(dtype).masked_fill(~self.allowed_start, forbidden)
        end = self.end_transitions.to(dtype).masked_fill(~self.allowed_end, forbidden)
        return transitions, start, end

    def _validate(self, emissions: Tensor, mask: Tensor, tags: Tensor | None = None) -> None:
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(f"emissions must have shape [batch, length, num_tags={self.num_tags}], got {tuple(emissions.shape)}")
        if not emissions.is_floating_point():
            raise ValueError(f"emissions must be a floating-point tensor, got {emissions.dtype}")
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor, got {mask.dtype}; convert an attention mask with mask.bool()")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match emissions [batch, length] = {tuple(emissions.shape[:2])}")
        if emissions.shape[1] == 0:
            raise ValueError("sequences must have at least one token, got emissions of length 0")
        if not bool(mask[:, 0].all()):
            bad = torch.nonzero(~mask[:, 0]).flatten().tolist()
            raise ValueError(f"mask[:, 0] must be True for every sequence (no empty sequences), but it is False for rows {bad}")
        if bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            bad = torch.nonzero((mask[:, 1:] & ~mask[:, :-1]).any(dim=1)).flatten().tolist()
            raise ValueError(
                f"mask must be left-aligned (True for the first n tokens, then False), but rows {bad} have a gap; "
                "compact each sequence to the front first (e.g. gather first sub-tokens of words)"
            )
        if tags is not None:
            if tags.shape != mask.shape:
                raise ValueError(f"tags shape {tuple(tags.shape)} does not match mask shape {tuple(mask.shape)}")
            if tags.dtype != torch.long:
                raise ValueError(f"tags must be a long tensor, got {tags.dtype}")
            real = tags[mask]
            if real.numel() and (int(real.min()) < 0 or int(real.max()) >= self.num_tags):
                raise ValueError(
                    f"tags at unmasked positions must be in [0, {self.num_tags}), got values in [{int(real.min())}, {int(real.max())}]; "
                    "padding ids such as -100 are fine where mask is False"
                )

    # ----------------------------------------------------------------------------------------------- public API
    def log_likelihood(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Per-sequence ``log p(tags | emissions)``.

        Args:
            emissions: ``[B, L, T]`` unnormalised tag scores, any float dtype.
            tags: ``[B, L]`` long gold tags; values where ``mask`` is False are ignored.
            mask: ``[B, L]`` bool, left-aligned, ``mask[:, 0]`` all True.

        Returns:
            ``[B]`` log-likelihoods in float32 (float64 for float64 inputs). A gold path that breaks the
            constraints scores about ``FORBIDDEN_SCORE`` per broken transition, a loud sign that the labels do
            not follow the tag scheme.

        Raises:
            ValueError: If shapes, dtypes, mask layout or tag values are invalid.
        """
        self._validate(emissions, mask, tags)
        return self._path_score(emissions, tags, mask) - self._log_partition(emissions, mask)

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor, reduction: str = "mean") -> Tensor:
        """Negative log-likelihood loss.

        Args:
            emissions: ``[B, L, T]`` unnormalised tag scores.
            tags: ``[B, L]`` long gold tags.
            mask: ``[B, L]`` bool, left-aligned.
            reduction: ``"mean"`` over sequences, ``"sum"``, ``"token_mean"`` (sum divided by the number of real
                tokens, so long and short batches weigh tokens alike) or ``"none"`` (``[B]``).

        Returns:
            The loss: a scalar, or ``[B]`` for ``"none"``.

        Raises:
            ValueError: If ``reduction`` is unknown or the inputs are invalid.
        """
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; expected one of {list(REDUCTIONS)}")
        nll = -self.log_likelihood(emissions, tags, mask)
        if reduction == "none":
            return nll
        if reduction == "sum":
            return nll.sum()
        if reduction == "mean":
            return nll.mean()
        return nll.sum() / mask.sum().clamp(min=1)

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Log of the sum of ``exp(score)`` over every (allowed) tag path: the forward algorithm.

        Args:
            emissions: ``[B, L, T]`` unnormalised tag scores.
            mask: ``[B, L]`` bool, left-aligned.

        Returns:
            ``[B]`` log partition values.
        """
        self._validate(emissions, mask)
        return self._log_partition(emissions, mask)

    def _path_score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        dtype = self._compute_dtype(emissions)
        with _no_autocast(emissions):
            emissions = emissions.to(dtype)
            transitions, start, end = self._scores(dtype, FORBIDDEN_SCORE)
            tags = tags.masked_fill(~mask, 0)  # padding ids (e.g. -100) must still be valid indices
            weights = mask.to(dtype)
            emitted = emissions.gather(-1, tags.unsqueeze(-1)).squeeze(-1)
            score = start[tags[:, 0]] + (emitted * weights).sum(dim=1)
            score = score + (transitions[tags[:, :-1], tags[:, 1:]] * weights[:, 1:]).sum(dim=1)
            last = mask.sum(dim=1, keepdim=True) - 1
            return score + end[tags.gather(1, last).squeeze(1)]

    def _log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        dtype = self._compute_dtype(emissions)
        with _no_autocast(emissions):
            emissions = emissions.to(dtype)
            transitions, start, end = self._scores(dtype, FORBIDDEN_SCORE)
            # alpha[b, j]: log-sum of scores of all prefixes ending in tag j at the current step.
            alpha = start + emissions[:, 0]
            for t in range(1, emissions.shape[1]):
                step = torch.logsumexp(alpha.unsqueeze(2) + transitions + emissions[:, t].unsqueeze(1), dim=1)
                # Finished sequences carry their alpha through the padding unchanged.
                alpha = torch.where(mask[:, t].unsqueeze(1), step, alpha)
            return torch.logsumexp(alpha + end, dim=1)

    def decode(self, emissions: Tensor, mask: Tensor) -> tuple[list[list[int]], Tensor]:
        """Viterbi decoding: the highest-scoring allowed tag path of each sequence.

        Ties are broken towards the lowest tag id (for the last tag, and for each back-pointer), so results are
        deterministic.

        Args:
            emissions: ``[B, L, T]`` unnormalised tag scores.
            mask: ``[B, L]`` bool, left-aligned.

        Returns:
            ``(paths, scores)``: ``paths[b]`` is a list of ``mask[b].sum()`` tag ids and ``scores`` the ``[B]``
            path scores (same formula as the training objective).

        Raises:
            ValueError: If the inputs are invalid, or the constraints admit no path of some sequence's length.
        """
        self._validate(emissions, mask)
        dtype = self._compute_dtype(emissions)
        batch, length, num_tags = emissions.shape
        with _no_autocast(emissions):
            emissions = emissions.to(dtype)
            # -inf rather than FORBIDDEN_SCORE: a max never needs a finite gradient through the entries it
            # rejects, and this way no emission, however large, can buy a forbidden transition.
            transitions, start, end = self._scores(dtype, float("-inf"))
            score = start + emissions[:, 0]
            identity = torch.arange(num_tags, device=emissions.device).expand(batch, num_tags)
            backpointers = []
            for t in range(1, length):
                candidates = score.unsqueeze(2) + transitions  # [B, from, to]
                # argmax returns the first maximum, which is what makes tie-breaking deterministic.
                best_prev = candidates.argmax(dim=1)
                step = candidates.gather(1, best_prev.unsqueeze(1)).squeeze(1) + emissions[:, t]
                active = mask[:, t].unsqueeze(1)
                score = torch.where(active, step, score)
                # In padding, point each tag at itself so backtracking walks through unchanged.
                backpointers.append(torch.where(active, best_prev, identity))
            final = score + end
            best_last = final.argmax(dim=1)
            best_score = final.gather(1, best_last.unsqueeze(1)).squeeze(1)
        if bool(torch.isneginf(best_score).any()):
            bad = torch.nonzero(torch.isneginf(best_score)).flatten().tolist()
            raise ValueError(
                f"no allowed tag path exists for rows {bad} under this CRF's transition constraints (or their emissions are -inf)"
            )
        path = [best_last]
        for pointers in reversed(backpointers):
            path.append(pointers.gather(1, path[-1].unsqueeze(1)).squeeze(1))
        tags = torch.stack(path[::-1], dim=1).tolist()
        lengths = mask.sum(dim=1).tolist()
        return [row[:n] for row, n in zip(tags, lengths)], best_score
