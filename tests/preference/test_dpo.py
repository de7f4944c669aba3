"""--task dpo end to end on a tiny random Llama: one model in memory, reference = the model before training, metrics."""

from __future__ import annotations

import gc
import json

import pytest
from transformers import TrainerCallback

import tunesmith
from tunesmith.cli import main
from tunesmith.training.runner import train


def live_llamas() -> int:
    from transformers import LlamaForCausalLM

    gc.collect()
    return sum(isinstance(o, LlamaForCausalLM) for o in gc.get_objects())


class CountModels(TrainerCallback):
    """After the first and the last step: how many causal LMs the run added, and the adapters of the trained model.

    Counted against the models alive before the run: other tests of the same session may keep theirs (caches).
    """

    def __init__(self):
        self.before = live_llamas()
        self.counts: list[int] = []
        self.adapters: list[list[str]] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step not in (1, state.max_steps):  # a reference copy would live through the whole run
            return
        self.counts.append(live_llamas() - self.before)
        self.adapters.append(sorted(getattr(model, "peft_config", {})))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_dpo_keeps_one_model_and_scores_against_the_untrained_one(tiny_llama, pairs_jsonl, llama_args, tmp_path, method, capsys):
    out = tmp_path / f"dpo-{method}"
    counter = CountModels()
    run = train({"task": "dpo"}, callbacks=[counter], train=str(pairs_jsonl), out=str(out), method=method, **llama_args)

    # one Llama in memory at every step: LoRA's reference is the base with the adapter off, full's is precomputed
    assert len(counter.counts) == 2 and set(counter.counts) == {1}
    if method == "lora":
        assert set(map(tuple, counter.adapters)) == {("default",)}  # TRL's copy of the adapter as a "ref" adapter is gone

    metrics = run.metrics["eval"]
    assert {"config.yaml", "data.json", "metrics.json", "history.jsonl", "model"} <= {p.name for p in out.iterdir()}
    assert metrics["reward_accuracy"] >= 0.8 and metrics["reward_margin"] > 0
    assert metrics["logp_margin_after"] > metrics["logp_margin_before"]
    # the reward margin computed here (policy vs log-probs of the model before training) equals the one TRL logged at the
    # best checkpoint (policy vs its own reference): both references are the untrained model
    best = int(run.metrics["training"]["best_checkpoint"].rsplit("-", 1)[1])
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    logged = next(h for h in history if h["step"] == best and "eval_rewards/margins" in h)
    assert logged["eval_rewards/margins"] == pytest.approx(metrics["reward_margin"], rel=1e-3, abs=1e-4)

    if method == "lora":
        reloaded = tunesmith.load(out)
        assert isinstance(reloaded.predict(["what colour is the weather"])[0]["generated"], str)
        again, records = reloaded.evaluate(str(pairs_jsonl))
        assert again["n"] == 48 and len(records) == 48 and again["reward_accuracy"] >= 0.8
        assert main(["eval", str(out), "--data", str(pairs_jsonl)]) == 0
        assert "reward_accuracy" in capsys.readouterr().out
