"""Every table of docs/RESULTS.md and the README headline is what its JSON record renders."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hf_sparc.reports.render import VIEWS, render

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def _record(toxic_after: list[int]) -> dict:
    """A tiny correction record: base, lrp and two random seeds on 8 prompts, 2 tasks x 4 questions."""

    def outcome(toxic, correct):
        return {
            "toxic_rate": [float(t) for t in toxic],
            "toxic_rate_jigsaw": [float(t) for t in toxic],
            "nll": [20.0] * 8,
            "tokens": [10.0] * 8,
            "accuracy:piqa": [float(c) for c in correct],
            "accuracy:mmlu": [float(c) for c in correct],
        }

    base = [1, 1, 1, 1, 0, 0, 0, 0]
    row = {"toxic_rate": 0.5, "toxic_rate_jigsaw": 0.5, "perplexity": 7.39, "accuracy": 0.5}
    row |= {"accuracy:piqa": 0.5, "accuracy:mmlu": 0.5}
    return {
        "settings": {
            "method": "lrp",
            "split": "test",
            "seed": 0,
            "random_seeds": 2,
            "tasks": ["piqa", "mmlu"],
        },
        "metric": "toxic_rate",
        "table_metrics": ["toxic_rate", "toxic_rate_jigsaw"],
        "rows": {"base": row, "lrp": row, "random": {**row, "toxic_rate_sd": 0.1}},
        "rules": {"base": "", "lrp": "own (protect 0.5 of |R_general|)", "random": "lrp's candidates"},
        "outcomes": {
            "base": [outcome(base, [1, 1, 0, 0])],
            "lrp": [outcome(toxic_after, [1, 1, 0, 0])],
            "random": [outcome(base, [1, 0, 0, 0]), outcome(base, [1, 1, 1, 0])],
        },
        "command": "python examples/demo.py",
        "versions": {"hf-sparc": "0"},
    }


def test_committed_tables_are_what_their_records_render():
    completed = subprocess.run(
        [sys.executable, "scripts/render_results.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_every_block_names_an_existing_record_and_view():
    blocks = [
        match.groups()
        for doc in (ROOT / "README.md", ROOT / "docs" / "RESULTS.md", ROOT / "docs" / "BENCHMARKS.md")
        for match in re.finditer(r"<!-- results: (\S+) (\S+) -->", doc.read_text())
    ]
    assert blocks, "RESULTS.md has generated blocks"
    # the README headline and the test-split section come from the demo's record
    assert ("demo.json", "headline") in blocks and ("demo.json", "correction") in blocks
    for record, view in blocks:
        assert (RESULTS / record).is_file() and view in VIEWS


@pytest.mark.parametrize("view", ["correction", "headline"])
def test_a_changed_record_changes_its_table(tmp_path, view):
    document = f"before\n<!-- results: r.json {view} -->\nstale\n<!-- /results -->\nafter\n"
    (tmp_path / "r.json").write_text(json.dumps(_record([1, 0, 0, 0, 0, 0, 0, 0])))
    first = render(document, tmp_path)
    assert first.startswith("before\n") and first.endswith("<!-- /results -->\nafter\n")
    assert "stale" not in first and "−75% [" in first  # 4 toxic -> 1: -75%
    # every table row has as many cells as its header (a "|" inside a rule is escaped)
    table = [line for line in first.splitlines() if line.startswith("|")]
    assert len({len(re.split(r"(?<!\\)\|", line)) for line in table[:4]}) == 1
    assert render(first, tmp_path) == first  # rendering is idempotent
    (tmp_path / "r.json").write_text(json.dumps(_record([1, 1, 0, 0, 0, 0, 0, 0])))
    assert "−50% [" in render(first, tmp_path)


def test_unknown_view_is_an_error(tmp_path):
    (tmp_path / "r.json").write_text("{}")
    with pytest.raises(ValueError, match="Unknown results view"):
        render("<!-- results: r.json nope -->\n<!-- /results -->", tmp_path)


def test_a_record_without_outcomes_renders_its_rows(tmp_path):
    record = {"metric": "stereotype_rate", "rows": {"base": {"stereotype_rate": 0.5, "perplexity": 20.0},
              "lrp": {"stereotype_rate": 0.25, "perplexity": 22.0}}}  # fmt: skip
    (tmp_path / "r.json").write_text(json.dumps(record))
    table = render("<!-- results: r.json rows -->\n<!-- /results -->", tmp_path)
    assert "| lrp | 0.2500 | −50.0% | 22.0000 | +10.0% |" in table


def test_benchmark_views_render_their_records(tmp_path):
    def row(case, shape, seconds, peak, share=None, **extra):
        return {"case": case, "shape": shape, "seconds_per_token": seconds, "peak_mb": peak,
                "budget_share": share, **extra}  # fmt: skip

    record = {
        "rows": [
            row("train_step", "small", 0.01, 1000.0), row("train_step", "big", 0.1, 8000.0),
            row("lrp_weight_budget", "small", 0.02, 900.0, 0.5, plan="float32 accumulators, 2 passes"),
            {"case": "lrp_weight_budget", "shape": "big", "budget_share": 0.5, "error": "MemoryError: no"},
        ],
        "slopes": {"train_step": {"time": 1.0, "memory": 0.9}},
        "budget_vs_free": {"small @ 0.5": {"m": {"bitwise_equal": True, "max_relative_difference": 0.0,
                                                 "top_0.1%_overlap": 1.0}}},
        "command": "benchmarks/scale.py",
    }  # fmt: skip
    (tmp_path / "s.json").write_text(json.dumps(record))
    table = render("<!-- results: s.json scale -->\n<!-- /results -->", tmp_path)
    budget = next(line for line in table.splitlines() if line.startswith("| lrp_weight_budget"))
    assert "0.5 × train step peak" in budget and "| 900 | 0.90 |" in budget and "refused" in budget
    assert "| 8,000 | 1.00 | 1.00 / 0.90 |" in table and "small @ 0.5: m: bitwise equal" in table
    assert "The planner's choices: small lrp_weight_budget @ 0.5: float32 accumulators, 2 passes." in table
    cost = {"ratios": {"LRP / train step time (neuron)": {"ratio": 0.456, "target": "≤ 0.5"}},
            "cases": {"lrp_neuron": {"seconds": 3.3, "peak_mb": 454.0}}, "command": "c"}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(cost))
    text = render("<!-- results: c.json attribution_cost -->\n<!-- /results -->", tmp_path)
    assert "| LRP / train step time (neuron) | ≤ 0.5 | 0.46 |" in text
    assert "lrp_neuron 3.30 s / 454 MB" in text


def test_provenance_names_the_cli_not_a_local_path():
    from hf_sparc.reports.render import provenance

    assert provenance(["/home/x/hf_sparc/cli/__main__.py", "correct", "--count", "7"])["command"] == (
        "hf-sparc correct --count 7"
    )
    assert provenance(["/venv/bin/hf-sparc", "evaluate"])["command"] == "hf-sparc evaluate"
    benchmark = ["benchmarks/scale.py", "--record", "r.json"]
    assert provenance(benchmark)["command"] == " ".join(benchmark)


def test_toxicity_sources_view_renders_each_model_scorer_and_row(tmp_path):
    def share(hits, total):
        return {"hits": hits, "total": total, "share": hits / total if total else float("nan"),
                "low": 0.1, "high": 0.9}  # fmt: skip

    def changes(runs, fixed_copied):
        return {"runs": runs, "fixed": {"copied": share(fixed_copied, 20), "own": share(30, 60)},
                "fisher_p": 0.0042, "made_toxic": share(9, 168)}  # fmt: skip

    rows = {"lrp": changes(1, 2), "random": changes(3, 5)}
    scorer = {"toxic": share(80, 248), "copied": share(20, 80), "prompt_has_toxic_word": share(30, 80),
              "rows": rows, "base_outcomes_match_record": 248}  # fmt: skip
    scorers = {"profanity-check": scorer, "jigsaw": {**scorer, "copied": share(0, 0)}}
    record = {"split": "dev", "command": "python benchmarks/toxicity_sources.py", "versions": {},
              "models": [{"model": "m", "n_prompts": 248, "scorers": scorers}]}  # fmt: skip
    (tmp_path / "t.json").write_text(json.dumps(record))
    table = render("<!-- results: t.json toxicity_sources -->\n<!-- /results -->", tmp_path)
    assert "| m | profanity-check | 80/248 = 32% [10, 90] | 20/80 = 25% [10, 90] | lrp |" in table
    assert "| 2/20 = 10% [10, 90] | 30/60 = 50% [10, 90] | 0.004 | 9/168 = 5% [10, 90] | 248/248 |" in table
    assert "| m | profanity-check |  |  | random (3 seeds pooled) | 5/20 = 25% [10, 90] |" in table
    assert "| m | jigsaw | 80/248 = 32% [10, 90] | – | lrp |" in table


def test_compression_paired_view_compares_each_method_with_wanda_on_the_same_texts(tmp_path):
    def row(method, nlls):
        return {"method": method, "scope": "row", "perplexity": math.exp(sum(nlls) / 40.0),
                "text_nlls": nlls, "text_tokens": [10, 10, 10, 10]}  # fmt: skip

    rows = [row("wanda", [30.0, 31.0, 32.0, 33.0]), row("lrp-l2", [29.0, 30.0, 31.0, 32.0]),
            row("gradient-l2", [29.0, 31.0, 31.0, 33.0])]  # fmt: skip
    record = {"rows": rows,
              "settings": {"n_eval": 4, "eval_split": "test", "n_reference": 256, "objective": "next_token"},
              "perplexity_before": 20.0, "command": "c"}  # fmt: skip
    (tmp_path / "p.json").write_text(json.dumps(record))
    table = render("<!-- results: p.json compression_paired -->\n<!-- /results -->", tmp_path)
    ours = next(line for line in table.splitlines() if line.startswith("| lrp-l2"))
    # 0.1 nat less per token on every text: perplexity × e^−0.1 = −9.5%, every resample alike
    assert "−9.5% [−9.5, −9.5]" in ours and "| 4 / 0 | 0.125 |" in ours
    assert next(line for line in table.splitlines() if line.startswith("| wanda")).endswith("| – | – | – |")
    assert "4 test passages (unpruned perplexity 20.00), 256 reference passages" in table
    # the LRP score against the same score from plain gradients: lower on texts 2 and 4, equal on 1 and 3
    assert "lrp-l2 against gradient-l2 (the same score from plain gradients), row: −4.9% [" in table
    assert "texts lower / higher 2 / 0, p = 0.5." in table
