"""--task reward end to end on a tiny random Llama: run directory, pairwise accuracy before and after, predict and eval."""

from __future__ import annotations

import json

import tunesmith
from preference.conftest import cli_flags
from tunesmith.cli import main


def test_reward_model_learns_the_preference_and_writes_a_run(tiny_llama, pairs_jsonl, llama_args, tmp_path, capsys):
    out = tmp_path / "reward"
    code = main(["train", "--task", "reward", "--train", str(pairs_jsonl), "--method", "lora", "--out", str(out), *cli_flags(llama_args)])
    assert code == 0, capsys.readouterr().err
    assert {"config.yaml", "data.json", "metrics.json", "history.jsonl", "model", "eval_predictions.jsonl"} <= {
        p.name for p in out.iterdir()
    }
    m = json.loads((out / "metrics.json").read_text())["eval"]
    assert m["format"] == "chat template"
    assert m["pairwise_accuracy"] >= 0.9 and m["pairwise_accuracy"] >= m["pairwise_accuracy_before"]
    assert m["reward_margin"] > m["reward_margin_before"] + 0.5
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert any("eval_accuracy" in h for h in history)  # TRL's per-eval accuracy reaches history.jsonl
    records = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    assert len(records) == m["n"] and sum(r["correct"] for r in records) / len(records) == m["pairwise_accuracy"]

    run = tunesmith.load(out)
    good, bad = run.predict(
        [{"prompt": "what colour is the sky 1", "response": "blue sky"}, {"prompt": "what colour is the sky 1", "response": "mud storm"}]
    )
    assert good["reward"] > bad["reward"]
    metrics, _ = run.evaluate(str(pairs_jsonl))
    assert metrics["n"] == 48 and metrics["pairwise_accuracy"] >= 0.9
    capsys.readouterr()
    assert main(["predict", str(out), "--text", "blue sky", "--text", "mud storm"]) == 0
    assert "rewards of" in capsys.readouterr().out
