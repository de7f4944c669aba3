"""The CRF checked against brute force over every tag path, plus gradients, constraints, padding and dtypes."""

from __future__ import annotations

import itertools

import pytest
import torch

from tunesmith.tasks.crf import CRF, allowed_transitions

BIO_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
BIOES_LABELS = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "E-LOC"]


def random_crf(num_tags: int, seed: int, constraints: tuple[torch.Tensor, ...] = ()) -> CRF:
    """A float64 CRF with O(1) random scores, so no path dominates and the brute force is a real check."""
    torch.manual_seed(seed)
    crf = CRF(num_tags, *constraints).double()
    with torch.no_grad():
        for param in crf.parameters():
            param.normal_()
    return crf


def random_batch(num_tags: int, lengths: list[int], seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Emissions, tags and a left-aligned mask; padding is filled with junk that must not matter."""
    generator = torch.Generator().manual_seed(seed)
    max_len = max(lengths)
    emissions = torch.randn(len(lengths), max_len, num_tags, generator=generator, dtype=torch.float64)
    tags = torch.randint(0, num_tags, (len(lengths), max_len), generator=generator)
    mask = torch.arange(max_len).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    emissions = emissions.masked_fill(~mask.unsqueeze(-1), 1e3)
    tags = tags.masked_fill(~mask, -100)
    return emissions, tags, mask


def path_is_allowed(path: tuple[int, ...], crf: CRF) -> bool:
    return (
        bool(crf.allowed_start[path[0]])
        and bool(crf.allowed_end[path[-1]])
        and all(bool(crf.allowed[a, b]) for a, b in itertools.pairwise(path))
    )


def brute_force(crf: CRF, emissions: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every allowed path of one sequence (``emissions [L, T]``) and its score, written out from the definition."""
    num_tags = emissions.shape[-1]
    paths = [p for p in itertools.product(range(num_tags), repeat=length) if path_is_allowed(p, crf)]
    p = torch.tensor(paths)
    with torch.no_grad():
        scores = crf.start_transitions[p[:, 0]] + emissions[torch.arange(length), p].sum(1) + crf.end_transitions[p[:, -1]]
        if length > 1:
            scores = scores + crf.transitions[p[:, :-1], p[:, 1:]].sum(1)
    return p, scores


CASES = [(num_tags, max_len, seed) for num_tags in (2, 3, 4) for max_len in (1, 3, 5) for seed in (0, 1)]


def check_against_brute_force(crf: CRF, lengths: list[int], seed: int) -> None:
    emissions, tags, mask = random_batch(crf.num_tags, lengths, seed)
    log_z = crf.log_partition(emissions, mask)
    paths, best = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        all_paths, scores = brute_force(crf, emissions[b, :n], n)
        torch.testing.assert_close(log_z[b], torch.logsumexp(scores, 0), atol=1e-6, rtol=0)
        argmax = int(scores.argmax())
        assert paths[b] == all_paths[argmax].tolist()
        torch.testing.assert_close(best[b], scores[argmax], atol=1e-6, rtol=0)
        # Log-likelihood of a few allowed paths (forbidden ones would carry the -1e4 penalty), as row b's gold tags.
        for k in torch.randperm(len(all_paths), generator=torch.Generator().manual_seed(seed))[:3].tolist():
            gold = tags.clone()
            gold[b, :n] = all_paths[k]
            ll = crf.log_likelihood(emissions, gold, mask)[b]
            torch.testing.assert_close(ll, scores[k] - torch.logsumexp(scores, 0), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("num_tags", "max_len", "seed"), CASES)
def test_unconstrained_matches_brute_force(num_tags, max_len, seed):
    crf = random_crf(num_tags, seed)
    lengths = [max_len, *torch.randint(1, max_len + 1, (3,), generator=torch.Generator().manual_seed(seed)).tolist()]
    check_against_brute_force(crf, lengths, seed)


@pytest.mark.parametrize(("labels", "scheme"), [(BIO_LABELS, "BIO"), (BIOES_LABELS, "BIOES")])
@pytest.mark.parametrize("seed", [0, 1])
def test_constrained_matches_brute_force_over_allowed_paths(labels, scheme, seed):
    crf = random_crf(len(labels), seed, allowed_transitions(labels, scheme))
    check_against_brute_force(crf, [5, 1, 3, 4] if scheme == "BIO" else [4, 1, 2, 3], seed)


def test_decode_never_takes_a_forbidden_transition_however_strong_the_emissions():
    labels = BIO_LABELS
    crf = random_crf(len(labels), 0, allowed_transitions(labels, "BIO"))
    emissions = torch.zeros(2, 4, len(labels), dtype=torch.float64)
    emissions[:, 0, labels.index("I-PER")] = 1e6  # I-PER cannot start a sequence
    emissions[1, 2, labels.index("I-LOC")] = 1e6  # nor follow I-PER / O
    paths, scores = crf.decode(emissions, torch.ones(2, 4, dtype=torch.bool))
    for path in paths:
        assert path_is_allowed(tuple(path), crf), [labels[t] for t in path]
    assert torch.isfinite(scores).all()

    bioes = random_crf(len(BIOES_LABELS), 0, allowed_transitions(BIOES_LABELS, "BIOES"))
    emissions = torch.zeros(1, 3, len(BIOES_LABELS), dtype=torch.float64)
    emissions[0, :, BIOES_LABELS.index("B-PER")] = 1e6  # B-PER B-PER B-PER is forbidden three ways over
    (path,), _ = bioes.decode(emissions, torch.ones(1, 3, dtype=torch.bool))
    assert path_is_allowed(tuple(path), bioes), [BIOES_LABELS[t] for t in path]


def test_forbidden_entries_get_no_gradient():
    allowed, start, end = allowed_transitions(BIOES_LABELS, "BIOES")
    crf = random_crf(len(BIOES_LABELS), 0, (allowed, start, end))
    emissions, _, mask = random_batch(len(BIOES_LABELS), [4, 2], 0)
    paths, _ = crf.decode(emissions, mask)
    tags = torch.zeros(mask.shape, dtype=torch.long)
    for b, path in enumerate(paths):
        tags[b, : len(path)] = torch.tensor(path)
    crf(emissions, tags, mask).backward()
    assert crf.transitions.grad[~allowed].abs().max() == 0
    assert crf.start_transitions.grad[~start].abs().max() == 0
    assert crf.end_transitions.grad[~end].abs().max() == 0
    assert crf.transitions.grad[allowed].abs().max() > 0


def test_ties_break_towards_the_lowest_tag_id():
    crf = CRF(3)
    with torch.no_grad():
        for param in crf.parameters():
            param.zero_()
    paths, scores = crf.decode(torch.zeros(2, 4, 3), torch.tensor([[True] * 4, [True, True, False, False]]))
    assert paths == [[0, 0, 0, 0], [0, 0]]
    assert scores.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("constrained", [False, True])
def test_gradcheck_log_likelihood(constrained):
    constraints = allowed_transitions(["O", "B-X", "I-X"], "BIO") if constrained else ()
    crf = random_crf(3, 0, constraints)
    emissions, tags, mask = random_batch(3, [3, 2], 1)
    tags = tags.masked_fill(~mask, 0)
    if constrained:
        tags = torch.tensor([[1, 2, 0], [0, 1, 0]])
    emissions = emissions.masked_fill(~mask.unsqueeze(-1), 0.5).requires_grad_()
    params = {name: p.detach().clone().requires_grad_() for name, p in crf.named_parameters()}

    def log_likelihood(emissions, transitions, start, end):
        values = {"transitions": transitions, "start_transitions": start, "end_transitions": end}
        return torch.func.functional_call(crf, values, (emissions, tags, mask), {"reduction": "none"})

    inputs = (emissions, params["transitions"], params["start_transitions"], params["end_transitions"])
    assert torch.autograd.gradcheck(log_likelihood, inputs)


def test_training_learns_context_dependent_tags():
    # "smith" is B-PER after O or at the start, I-PER after "john": emissions alone cannot tell, transitions can.
    vocab = {w: i for i, w in enumerate(["john", "smith", "runs", "the", "paris", "is", "big"])}
    labels = ["O", "B-PER", "I-PER", "B-LOC"]
    data = [
        ("john smith runs", "B-PER I-PER O"),
        ("smith runs", "B-PER O"),
        ("the smith runs", "O B-PER O"),
        ("paris is big", "B-LOC O O"),
        ("john runs", "B-PER O"),
    ]
    max_len = max(len(s.split()) for s, _ in data)
    words = torch.zeros(len(data), max_len, dtype=torch.long)
    tags = torch.full((len(data), max_len), -100)
    mask = torch.zeros(len(data), max_len, dtype=torch.bool)
    for b, (sentence, gold) in enumerate(data):
        n = len(sentence.split())
        words[b, :n] = torch.tensor([vocab[w] for w in sentence.split()])
        tags[b, :n] = torch.tensor([labels.index(t) for t in gold.split()])
        mask[b, :n] = True

    torch.manual_seed(0)
    embed = torch.nn.Embedding(len(vocab), len(labels))
    crf = CRF(len(labels))
    optimizer = torch.optim.Adam([*embed.parameters(), *crf.parameters()], lr=0.1)
    first = crf(embed(words), tags, mask).item()
    for _ in range(200):
        optimizer.zero_grad()
        loss = crf(embed(words), tags, mask, reduction="token_mean")
        loss.backward()
        optimizer.step()
    assert crf(embed(words), tags, mask).item() < 0.05 * first
    paths, _ = crf.decode(embed(words), mask)
    assert paths == [[labels.index(t) for t in gold.split()] for _, gold in data]


def test_allowed_transitions_bio():
    allowed, start, end = allowed_transitions(BIO_LABELS, "BIO")
    # rows: from O, B-PER, I-PER, B-LOC, I-LOC; columns: to the same order.
    expected = ["11010", "11110", "11110", "11011", "11011"]
    assert allowed.tolist() == [[c == "1" for c in row] for row in expected]
    assert start.tolist() == [True, True, False, True, False]
    assert end.tolist() == [True] * 5


def test_allowed_transitions_bioes():
    allowed, start, end = allowed_transitions(BIOES_LABELS, "bioes")
    # order: O, B-PER, I-PER, E-PER, S-PER, B-LOC, E-LOC
    expected = [
        "1100110",  # O     -> O | B-* | S-*
        "0011000",  # B-PER -> I-PER | E-PER
        "0011000",  # I-PER -> I-PER | E-PER
        "1100110",  # E-PER -> O | B-* | S-*
        "1100110",  # S-PER -> O | B-* | S-*
        "0000001",  # B-LOC -> E-LOC (there is no I-LOC)
        "1100110",  # E-LOC -> O | B-* | S-*
    ]
    assert allowed.tolist() == [[c == "1" for c in row] for row in expected]
    assert start.tolist() == [True, True, False, False, True, True, False]
    assert end.tolist() == [True, False, False, True, True, False, True]


@pytest.mark.parametrize(
    ("labels", "scheme", "message"),
    [
        (["O", "B-PER", "X-PER"], "BIO", "'X-PER'"),
        (["O", "S-PER"], "BIO", "'S-PER'"),
        (["O", "PER"], "BIOES", "'PER'"),
        (["O", "B-"], "BIO", "'B-'"),
        (["O", "O"], "BIO", "distinct"),
        (["O"], "IOB3", "'IOB3'"),
    ],
)
def test_allowed_transitions_rejects_bad_labels(labels, scheme, message):
    with pytest.raises(ValueError, match=message):
        allowed_transitions(labels, scheme)


def test_padded_batch_equals_each_sequence_alone():
    crf = random_crf(4, 3, allowed_transitions(["O", "B-A", "I-A", "B-B"], "BIO"))
    lengths = [6, 2, 1, 4]
    emissions, tags, mask = random_batch(4, lengths, 3)
    paths, _ = crf.decode(emissions, mask)  # allowed gold paths keep the likelihoods away from the penalty
    for b, path in enumerate(paths):
        tags[b, : len(path)] = torch.tensor(path)
    batch_ll = crf.log_likelihood(emissions, tags, mask)
    batch_z = crf.log_partition(emissions, mask)
    batch_paths, batch_scores = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        alone = (emissions[b : b + 1, :n], tags[b : b + 1, :n], torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(batch_ll[b : b + 1], crf.log_likelihood(*alone), atol=1e-10, rtol=0)
        torch.testing.assert_close(batch_z[b : b + 1], crf.log_partition(alone[0], alone[2]), atol=1e-10, rtol=0)
        path, score = crf.decode(alone[0], alone[2])
        assert batch_paths[b] == path[0]
        torch.testing.assert_close(batch_scores[b : b + 1], score, atol=1e-10, rtol=0)


def test_bf16_emissions_give_float32_results_also_under_autocast():
    torch.manual_seed(0)
    crf = CRF(5, *allowed_transitions(BIO_LABELS, "BIO"))
    emissions = torch.randn(3, 6, 5).bfloat16()
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [True] + [False] * 5])
    tags = torch.zeros(3, 6, dtype=torch.long)
    reference_z = crf.log_partition(emissions.float(), mask)
    reference_paths, reference_scores = crf.decode(emissions.float(), mask)
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            z = crf.log_partition(emissions, mask)
            ll = crf.log_likelihood(emissions, tags, mask)
            loss = crf(emissions.requires_grad_(), tags, mask)
            paths, scores = crf.decode(emissions, mask)
        assert z.dtype == ll.dtype == loss.dtype == scores.dtype == torch.float32
        torch.testing.assert_close(z, reference_z)
        torch.testing.assert_close(scores, reference_scores)
        assert paths == reference_paths
        loss.backward()
        assert emissions.grad.dtype == torch.bfloat16


def test_reductions():
    crf = random_crf(3, 0)
    emissions, tags, mask = random_batch(3, [4, 2, 1], 0)
    nll = crf(emissions, tags, mask, reduction="none")
    torch.testing.assert_close(nll, -crf.log_likelihood(emissions, tags, mask))
    torch.testing.assert_close(crf(emissions, tags, mask, reduction="sum"), nll.sum())
    torch.testing.assert_close(crf(emissions, tags, mask), nll.mean())
    torch.testing.assert_close(crf(emissions, tags, mask, reduction="token_mean"), nll.sum() / 7)
    with pytest.raises(ValueError, match="'average'.*token_mean"):
        crf(emissions, tags, mask, reduction="average")


@pytest.mark.parametrize(
    ("mask", "tags", "emission_shape", "message"),
    [
        ([[True, True], [False, True]], None, (2, 2, 3), r"mask\[:, 0\] must be True.*rows \[1\]"),
        ([[True, False, True]], None, (1, 3, 3), r"left-aligned.*rows \[0\]"),
        ([[1, 1]], None, (1, 2, 3), "bool"),
        ([[True, True]], None, (1, 3, 3), "does not match"),
        ([[True, True]], None, (1, 2, 4), "num_tags=3"),
        ([[True, True]], [[0, 3]], (1, 2, 3), r"\[0, 3\)"),
        ([[True, False]], [[0, -100]], (1, 2, 3), None),
    ],
)
def test_invalid_inputs_raise_clear_errors(mask, tags, emission_shape, message):
    crf = CRF(3)
    mask = torch.tensor(mask)
    emissions = torch.randn(emission_shape)
    tags = torch.tensor(tags) if tags is not None else torch.zeros(mask.shape, dtype=torch.long)
    if message is None:  # padding ids are accepted where the mask is False
        assert torch.isfinite(crf(emissions, tags, mask))
        return
    with pytest.raises(ValueError, match=message):
        crf(emissions, tags, mask)


def test_constraint_masks_are_validated_and_travel_with_the_state_dict():
    with pytest.raises(ValueError, match=r"allowed must be a bool tensor of shape \(3, 3\)"):
        CRF(3, torch.ones(3, 3))
    allowed, start, end = allowed_transitions(BIO_LABELS, "BIO")
    restored = CRF(5)
    restored.load_state_dict(CRF(5, allowed, start, end).state_dict())
    assert torch.equal(restored.allowed, allowed) and torch.equal(restored.allowed_start, start)
