"""Attribution cost against model size: random-init Llama models of real shapes, side by side.

    python benchmarks/scale.py --shapes smollm2-135m tinyllama-1.1b --record docs/results/scale.json
    python benchmarks/scale.py --shapes tinyllama-1.1b --dtype bfloat16
    python benchmarks/scale.py --device cuda --shapes tinyllama-1.1b openllama-3b   # the same on a GPU

Per shape, each case in a fresh process (clean peak memory): ``train_step`` (forward + backward with
parameter gradients and the full-vocabulary loss), ``forward``, ``lrp_neuron``, ``lrp_weight``
(float64 accumulators, the default), ``lrp_weight_budget`` (``max_memory`` = each ``--budget``
share × the train step's peak: the planner's choice; one row per share), ``lrp_weight_offload``
(the same budgets with the weights offloaded to disk by accelerate's ``disk_offload``, so that the
planner may hold one decoder layer's weights at a time), ``wanda_weight``.
Reported: CPU seconds per token (``--device cpu``; CUDA: wall seconds after
synchronize) and peak memory (CPU: max RSS of the process, model included, from a second run of
the case with a fixed mmap threshold; CUDA: max allocated). Each budgeted run's relevance is
compared with the unbudgeted one on two modules (first and last layer).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig

sys.path.insert(0, os.path.dirname(__file__))
from _common import peak_rss_mb, random_texts, run_isolated, timed

import hf_sparc
from hf_sparc.reports.benchmarks import scale_series

SHAPES = {
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                         num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    "tinyllama-1.1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                           num_attention_heads=32, num_key_value_heads=4, tie_word_embeddings=False),
    "openllama-3b": dict(vocab_size=32000, hidden_size=3200, intermediate_size=8640, num_hidden_layers=26,
                         num_attention_heads=32, num_key_value_heads=32, tie_word_embeddings=False),
}  # fmt: skip
CASES = ("train_step", "forward", "lrp_neuron", "lrp_weight", "lrp_weight_budget", "lrp_weight_offload",
         "wanda_weight")  # fmt: skip
BUDGETED = ("lrp_weight_budget", "lrp_weight_offload")


def _config(shape: str) -> LlamaConfig:
    return LlamaConfig(**SHAPES[shape], max_position_embeddings=2048)


def _model(shape: str, dtype: torch.dtype, device: str):
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(_config(shape), dtype=dtype)
    return model.eval()


def _offload_directory(out: str, shape: str) -> Path:
    return Path(out) / f"offloaded-{shape}"


def _write_offloaded(shape: str, dtype: torch.dtype, out: str) -> None:
    """The random model's weights as accelerate's disk-offload folder, written by a child of the
    parent: a child's max RSS starts at its parent's RSS at fork (Linux keeps the high-water mark
    across exec), so the parent must never hold a model."""
    from accelerate.utils import offload_state_dict

    offload_state_dict(str(_offload_directory(out, shape)), _model(shape, dtype, "cpu").state_dict())


def _offloaded_model(shape: str, dtype: torch.dtype, device: str, out: str):
    """The same model built without weights, which accelerate loads from disk module by module."""
    from accelerate import disk_offload, init_empty_weights

    with init_empty_weights(include_buffers=False):  # rotary buffers are computed, not stored
        model = AutoModelForCausalLM.from_config(_config(shape), dtype=dtype)
    directory = str(_offload_directory(out, shape))
    model = disk_offload(model.eval(), offload_dir=directory, execution_device=device)
    model.tie_weights()  # neither empty init nor the offload hooks keep tied embeddings tied
    return model


def _peak(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else peak_rss_mb()


def run_case(case: str, args) -> dict:
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    if case == "lrp_weight_offload":
        model = _offloaded_model(args.shape, dtype, args.device, args.out)
    else:
        model = _model(args.shape, dtype, args.device)
    # counted before the run: accelerate's offload hooks untie tied embeddings as they load them
    n_weights = sum(p.numel() for p in model.parameters())
    texts = random_texts(args.batch_size, args.seq_len, model.config.vocab_size)
    batch = torch.tensor([t["input_ids"] for t in texts], device=args.device)
    tokens = args.batch_size * args.seq_len
    options = dict(batch_size=args.batch_size, max_length=args.seq_len, progress=False)
    saved = {}

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    if case == "train_step":
        model.train()

        def work():
            model.zero_grad(set_to_none=True)
            model(input_ids=batch, labels=batch).loss.backward()
            sync()
    elif case == "forward":

        def work():
            with torch.inference_mode():
                model(input_ids=batch)
            sync()
    else:
        method, level = case.split("_")[:2]
        if case in BUDGETED:
            options["max_memory"] = int(args.budget_bytes)
            _record_plan(saved_plan := [])

        def work():
            relevance = hf_sparc.attribute(model, texts, method=method, level=level, **options)
            sync()
            if level == "weight" and method == "lrp":
                names = list(relevance)
                saved.update({n: relevance[n].float().cpu() for n in (names[0], names[-1])})

    seconds = timed(work, args.repeats)
    if saved:
        share = f"-{args.budget_share:g}" if case in BUDGETED else ""
        torch.save(saved, Path(args.out) / f"{case}{share}.pt")
    return {"case": case, "shape": args.shape, "dtype": args.dtype, "parameters": n_weights, "tokens": tokens,
            "seconds": seconds["wall" if args.device == "cuda" else "cpu"], "wall": seconds["wall"],
            "seconds_per_token": seconds["wall" if args.device == "cuda" else "cpu"] / tokens,
            "peak_mb": _peak(args.device), "budget_bytes": options.get("max_memory"),
            "budget_share": args.budget_share if case in BUDGETED else None,
            "plan": saved_plan[-1] if case in BUDGETED else None}  # fmt: skip


def _record_plan(messages: list[str]) -> None:
    """Keep the planner's log lines (what it chose) in ``messages``: this child process's only
    handler on the library's logger."""
    import logging

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "memory plan" in record.getMessage():
                messages.append(record.getMessage().split(": ", 1)[1])

    logger = logging.getLogger("hf_sparc")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)


def _compare(out: Path, case: str, share: float) -> dict:
    free, bounded = torch.load(out / "lrp_weight.pt"), torch.load(out / f"{case}-{share:g}.pt")
    result = {}
    for name in free:
        a, b = free[name].flatten(), bounded[name].flatten()
        k = max(1, a.numel() // 1000)
        top_a, top_b = set(a.topk(k).indices.tolist()), set(b.topk(k).indices.tolist())
        result[name] = {"bitwise_equal": bool(torch.equal(a, b)),
                        "max_relative_difference": float((a - b).abs().max() / a.abs().max()),
                        "top_0.1%_overlap": len(top_a & top_b) / k}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes", nargs="+", choices=list(SHAPES), default=["smollm2-135m", "tinyllama-1.1b"]
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--budget",
        type=float,
        nargs="+",
        default=[0.5, 1.0],
        help="max_memory as shares of the train step's peak (one lrp_weight_budget row each)",
    )
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--record", default=None)
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--budget-bytes", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--budget-share", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--write-offloaded", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_offloaded:
        _write_offloaded(args.shape, getattr(torch, args.dtype), args.out)
        return
    if args.case:
        print(json.dumps(run_case(args.case, args)))
        return
    rows, comparisons = [], {}
    forwarded = ("dtype", "device", "batch_size", "seq_len", "repeats", "threads")
    common = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in forwarded]
    for shape in args.shapes:
        with tempfile.TemporaryDirectory() as out:
            results = {}
            runs = [(case, None) for case in args.cases if case not in BUDGETED]
            runs += [(case, share) for case in BUDGETED if case in args.cases for share in args.budget]
            if "lrp_weight_offload" in args.cases:
                writer = [sys.executable, __file__, "--write-offloaded", f"--shape={shape}", f"--out={out}"]
                subprocess.run([*writer, f"--dtype={args.dtype}"], check=True)
            for case, share in runs:
                key, extra = (case, share), [f"--shape={shape}", f"--out={out}"]
                if share is not None:
                    budget = share * results["train_step", None]["peak_mb"] * 2**20
                    extra += [f"--budget-bytes={budget}", f"--budget-share={share}"]
                try:
                    results[key] = run_isolated(__file__, case, common + extra)
                except Exception as error:  # a case that does not fit is a result too
                    detail = getattr(error, "stderr", None) or str(error)  # the child's traceback
                    results[key] = {"case": case, "shape": shape, "budget_share": share,
                                    "error": detail[-500:]}  # fmt: skip
                print(json.dumps(results[key]), flush=True)
            done = [key for key, r in results.items() if "error" not in r]  # in run order
            for case, share in done:
                if case in BUDGETED and ("lrp_weight", None) in done:
                    key = scale_series({"case": f"{shape} {case}", "budget_share": share})
                    comparisons[key] = _compare(Path(out), case, share)
                    print(json.dumps(comparisons[key]), flush=True)
            rows.extend(results.values())
    _print(rows)
    if args.record:
        from hf_sparc.reports.render import provenance

        record = {**provenance(), "settings": vars(args), "rows": rows, "budget_vs_free": comparisons,
                  "slopes": _slopes(rows)}  # fmt: skip
        Path(args.record).write_text(json.dumps(record, indent=2) + "\n")
        _plot(rows).savefig(Path(args.record).with_suffix(".png"), dpi=120, bbox_inches="tight")


def _plot(rows: list[dict]):
    """Seconds per token and peak memory against parameters, log-log, one line per case."""
    from hf_sparc.reports.writer import new_figure

    figure, (time_axis, memory_axis) = new_figure(10, 4, ncols=2)
    for label, points in _series(rows).items():
        sizes = [p for p, _ in points]
        time_axis.plot(sizes, [r["seconds_per_token"] for _, r in points], marker="o", label=label)
        memory_axis.plot(sizes, [r["peak_mb"] for _, r in points], marker="o", label=label)
    for axis, label in ((time_axis, "seconds per token"), (memory_axis, "peak memory (MB)")):
        axis.set(xscale="log", yscale="log", xlabel="parameters", ylabel=label)
        axis.xaxis.set_minor_formatter("")  # minor tick labels of a one-decade axis overlap
        axis.grid(True, which="both", alpha=0.3)
    time_axis.legend(fontsize=7)
    return figure


def _slopes(rows: list[dict]) -> dict:
    """Log-log slope of seconds per token and peak memory against parameters, per case (2+ shapes)."""
    slopes = {}
    for case, points in _series(rows).items():
        if len(points) >= 2:
            (p0, r0), (p1, r1) = points[0], points[-1]
            span = math.log(p1 / p0)
            slopes[case] = {"time": math.log(r1["seconds_per_token"] / r0["seconds_per_token"]) / span,
                            "memory": math.log(r1["peak_mb"] / r0["peak_mb"]) / span}  # fmt: skip
    return slopes


def _series(rows: list[dict]) -> dict[str, list[tuple[int, dict]]]:
    """(parameters, row) per case label (budget rows by share), smallest model first; failed runs left out."""
    series: dict[str, list[tuple[int, dict]]] = {}
    for row in rows:
        if "error" not in row:
            series.setdefault(scale_series(row), []).append((row["parameters"], row))
    return {label: sorted(points, key=lambda point: point[0]) for label, points in series.items()}


def _print(rows: list[dict]) -> None:
    print(f"\n{'shape':<16}{'case':<26}{'params':>10}{'s/token':>10}{'peak MB':>10}{'vs train step':>15}")
    train = {r["shape"]: r for r in rows if r.get("case") == "train_step" and "error" not in r}
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:<16}{scale_series(r):<26}  failed: {r['error'][-80:]}")
            continue
        ratio = r["peak_mb"] / train[r["shape"]]["peak_mb"] if r["shape"] in train else float("nan")
        print(f"{r['shape']:<16}{scale_series(r):<26}{r['parameters'] / 1e6:>9.0f}M"
              f"{r['seconds_per_token']:>10.4f}{r['peak_mb']:>10.0f}{ratio:>15.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
