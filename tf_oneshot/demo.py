"""The whole pipeline of Bender et al. 2018 on the embedded digits, offline, in minutes.

search space -> train the one-shot model (§3.2, §4.1) -> score architectures
with the shared weights: random search (§3.3, §4.1) and evolution (SPOS §3.4)
-> retrain a stratified sample stand-alone, briefly (§4.1, Figure 5) ->
analyze: Kendall tau, Spearman rho and pairwise accuracy (NAO-V2 §3.3), the
figures, a report. Every stage is the library code the commands run; the demo
only picks laptop-sized settings (`DemoConfig`) and prints progress throughout.

SIGTERM stops the demo at the next safe point of the stage in hand (a
checkpoint, a scored batch, a finished stand-alone run) and `run_demo` returns
`{"preempted": True, ...}` (`tf-oneshot demo` exits 143). Running it again
into the same directory resumes: training from its checkpoint, the searches
from their results files, retraining after its finished runs. A directory
that holds a finished demo, one run with other settings, or files that are
not a demo's is refused (pass a new one, or `overwrite`).

Output directory layout:
    demo.json                marks a demo's directory: its settings
    oneshot/                 the one-shot model_dir (config, checkpoints, events)
    search/random.jsonl      random search results
    search/evolution.jsonl   evolution results
    retrain/results.jsonl    stand-alone results, one line per (architecture, seed)
    retrain/export/          best.keras, best_saved_model/, best.json
    *.png, report.md, analysis.json, summary.json
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from tf_oneshot.analysis.report import OUTPUTS, analyze
from tf_oneshot.errors import UserError
from tf_oneshot.io_utils import atomic_write_json, read_json
from tf_oneshot.search_spaces.constraints import Constraints
from tf_oneshot.training.config import TrainConfig
from tf_oneshot.training.preemption import Preemption, signal_name

# flags/demo.flags: Bender et al. 2018 §4.1 at laptop scale (tests/test_demo.py
# checks the two agree).
DEMO_TRAIN = TrainConfig(
    dataset="digits", filters=16, num_cells=3, num_stacks=3, batch_size=64, ghost_batch_size=32,
    train_steps=400, dropout_rate=0.1, dropout_schedule="linear", learning_rate=0.1,
    weight_decay=1e-4, checkpoint_every=200, log_every=50,
    skip_threshold=0.0,  # 400 steps do not earn back a second trace (~35 s on 2 cores)
)
SUMMARY = "summary.json"
RUN_FILE = "demo.json"
RUN_KIND = "tf_oneshot.demo"
PARTS = ("oneshot", "search", "retrain", SUMMARY, RUN_FILE, *OUTPUTS)
RETRAIN_SELECTIONS = ("stratified", "best")
# Runs from which retraining inside the one-shot model (one trace) beats a Keras model per run
# (a trace each): below it the one-shot model's larger trace costs more than it saves.
MASKED_FROM_RUNS = 8


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of each stage; the defaults finish in minutes on a 2-core CPU.

    Attributes:
        train: the one-shot training run (flags/demo.flags).
        num_random: architectures scored by random search (§4.1 uses 20,000).
        num_evolution: architectures scored by evolution, population_size per
            generation, the best num_parents bred (SPOS §3.4: 50, 10).
        num_retrain: architectures retrained: a stratified sample of the random
            search over this many one-shot accuracy buckets (§4.1: 4 per bucket).
        retrain_steps: steps of each brief stand-alone training (§4.1: ~28 epochs).
            From MASKED_FROM_RUNS runs each child trains inside the one-shot
            model traced once (`retrain`'s "masked" method, the same training
            as its own Keras model), so after the first a child costs its steps and
            evaluation, not a trace: the demo spends that on more
            architectures (24, for a tau over 276 pairs) at 100 steps
            (~5 epochs of the digits).
        seeds: stand-alone runs per architecture (§4.1: 5). Accuracy ties
            between architectures are broken by the validation loss where
            the retrain lines record it (tf_oneshot.analysis.report).
        kl: also score the symmetrized KL divergence to the all-on model (§5).
        archs_per_pass: architectures per forward pass of the scorer (16 was
            fastest on 2 CPU cores; None lets the scorer time a few widths).
        seed: seeds the searches and the sample.
        constraints: bounds every searched architecture meets (SPOS §3.4,
            e.g. FLOPs <= 330M in Table 3); none by default.
        bn_mode: the scorer's batch-norm mode (None: the space's
            `default_bn_mode`; SPOS recalibrates for single-path spaces).
        recalibration_images: training images per candidate when
            recalibrating (None: `scorer.default_recalibration_images`).
        retrain_select: "stratified" (Bender et al. 2018, Fig. 5: a sample of
            the random search over its accuracy range) or "best" (SPOS §3.4:
            the best architectures searched, the winner first).
        rank_by: the stand-alone measure the one-shot ranking is judged
            against. §4.1 ranks by validation accuracy; the demo ranks by
            validation loss ("loss"): after ~5 epochs, 300 validation digits
            give accuracies in steps of 1/300 that order the children mostly
            by noise (the accuracy tau is reported too; README, "Ranking").
    """

    train: TrainConfig = DEMO_TRAIN
    num_random: int = 200
    num_evolution: int = 100
    population_size: int = 20
    num_parents: int = 5
    mutation_prob: float = 0.1
    num_retrain: int = 24
    retrain_steps: int = 100
    seeds: tuple[int, ...] = (0,)
    kl: bool = True
    archs_per_pass: int | None = 16
    seed: int = 0
    constraints: Constraints = Constraints()
    bn_mode: str | None = None
    recalibration_images: int | None = None
    retrain_select: str = "stratified"
    rank_by: str = "loss"


# What `tf-oneshot demo` runs (tests replace it with a smaller config in a child process).
DEFAULT_CONFIG = DemoConfig()


def _stratified(records: list[dict], n: int, seed: int) -> list[dict]:
    """`n` records spread over the one-shot accuracy range (Bender et al. 2018, §4.1).

    One per equal-width accuracy bucket (tf_oneshot.search.selection); where
    buckets are empty, the rest come from evenly spaced ranks of the others,
    so the sample always has `n` architectures.
    """
    from tf_oneshot.search.selection import stratified_sample

    chosen = stratified_sample(records, num_buckets=n, per_bucket=1, seed=seed)
    names = {r["architecture"] for r in chosen}
    rest = sorted((r for r in records if r["architecture"] not in names), key=lambda r: r["oneshot_accuracy"])
    missing = n - len(chosen)
    if missing > 0 and rest:
        picks = np.unique(np.linspace(0, len(rest) - 1, num=min(missing, len(rest))).round().astype(int))
        chosen += [rest[i] for i in picks]
    return sorted(chosen, key=lambda r: r["oneshot_accuracy"])


def _best(paths: list[str], n: int) -> list[dict]:
    """The `n` architectures of highest one-shot accuracy over the searches (SPOS §3.4 retrains the best)."""
    from tf_oneshot.analysis.records import load_search_results

    records, _ = load_search_results(paths)
    best: dict[str, dict] = {}
    for r in records:
        if r["architecture"] not in best or r["oneshot_accuracy"] > best[r["architecture"]]["oneshot_accuracy"]:
            best[r["architecture"]] = r
    return sorted(best.values(), key=lambda r: -r["oneshot_accuracy"])[:n]


def _winner(space: Any, run: dict) -> dict[str, Any] | None:
    """Evolution's best architecture with its one-shot accuracy and cost (SPOS Algorithm 1's output)."""
    if not run["best"]:
        return None
    arch, accuracy = run["best"][0]
    cost = space.count(space.parse(str(arch)))
    return {"architecture": str(arch), "oneshot_accuracy": accuracy, "params": cost.params, "flops": cost.flops}


def config_json(config: DemoConfig) -> dict[str, Any]:
    """The demo's settings as JSON (recorded in demo.json and summary.json)."""
    return {**{k: v for k, v in dataclasses.asdict(config).items() if k not in ("train", "constraints")},
            "seeds": list(config.seeds), "train": config.train.to_flat(),
            "constraints": config.constraints.to_json()}


def _prepare_output_dir(output_dir: str, config: DemoConfig, overwrite: bool) -> bool:
    """Starts a demo in `output_dir` or finds the unfinished one to resume; True if resuming.

    Raises:
        UserError: a finished demo, a demo with other settings, or files that
            are not a demo's (each with both ways out).
    """
    settings = json.loads(json.dumps(config_json(config)))  # as read back from demo.json
    marker = os.path.join(output_dir, RUN_FILE)
    if overwrite:
        _clear(output_dir)
    present = sorted(tf.io.gfile.listdir(output_dir)) if tf.io.gfile.isdir(output_dir) else []
    if not overwrite and present:
        if SUMMARY in present:
            raise UserError(
                f"--output_dir={output_dir} holds an earlier run ({SUMMARY}: that demo finished); "
                "pass a new directory, or --overwrite to replace it."
            )
        record = read_json(marker, "demo record") if RUN_FILE in present else None
        if not isinstance(record, dict) or record.get("kind") != RUN_KIND:
            raise UserError(
                f"--output_dir={output_dir} holds an earlier run or other files ({', '.join(present[:3])}) "
                f"but no {RUN_FILE} of a demo; pass a new directory, or --overwrite to replace them."
            )
        if record.get("config") != settings:
            raise UserError(
                f"--output_dir={output_dir} holds an earlier run: an unfinished demo with other settings; "
                "pass a new directory, or --overwrite to replace it."
            )
        return True
    atomic_write_json(marker, {"kind": RUN_KIND, "config": settings})
    return False


def _clear(output_dir: str) -> None:
    """Removes what an earlier demo wrote here (and nothing else)."""
    for name in PARTS:
        path = os.path.join(output_dir, name)
        if tf.io.gfile.isdir(path):
            tf.io.gfile.rmtree(path)
        elif tf.io.gfile.exists(path):
            tf.io.gfile.remove(path)


def run_demo(
    output_dir: str,
    config: DemoConfig = DemoConfig(),
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Runs train -> random search -> evolution -> retrain -> analyze into `output_dir`.

    Args:
        output_dir: a new or empty directory, an unfinished demo's to resume
            (same `config`), or any with `overwrite`.
        config: stage sizes.
        overwrite: replace an earlier demo in `output_dir`.
        log: progress lines.

    Returns:
        The summary written to summary.json: num_architectures_scored,
        kendall_tau, spearman_rho, pairwise_accuracy, best_architecture,
        plots, seconds per stage, and more. After SIGTERM: {"preempted":
        True, "stage": the stage stopped, "total_seconds": ...}, and no
        summary.json.

    Raises:
        UserError: an `output_dir` holding a finished demo, another demo's
            settings or other files, without `overwrite`.
    """
    if config.num_retrain < 2 or not config.seeds:
        raise UserError("the demo needs at least 2 architectures to retrain and one seed.")
    if config.retrain_select not in RETRAIN_SELECTIONS:
        raise UserError(f"--retrain_select={config.retrain_select} is unknown; choose one of "
                        f"{', '.join(RETRAIN_SELECTIONS)}.")
    resuming = _prepare_output_dir(output_dir, config, overwrite)
    if resuming:
        log(f"resuming the unfinished demo in {output_dir}: each stage goes on from what it saved")
    with Preemption() as preemption:
        return _run_stages(output_dir, config, log, preemption)


class _StageClock:
    """Each stage's wall seconds and this process's CPU seconds (all threads: comparable on a busy machine)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log, self.start = log, time.perf_counter()
        self.seconds: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def stage(self, index: int, text: str) -> tuple[float, float]:
        self.log(f"\n[{index}/5] {text}  (elapsed {time.perf_counter() - self.start:.0f}s)")
        return time.perf_counter(), time.process_time()

    def finish(self, name: str, tic: tuple[float, float]) -> None:
        self.seconds[name], self.cpu[name] = time.perf_counter() - tic[0], time.process_time() - tic[1]


def _run_stages(output_dir: str, config: DemoConfig, log: Callable[[str], None], preemption) -> dict[str, Any]:
    from tf_oneshot import search
    from tf_oneshot.training import trainer
    from tf_oneshot.training.model_dir import ModelDir
    from tf_oneshot.training.retrain import Candidate, retrain

    path = lambda *parts: os.path.join(output_dir, *parts)  # noqa: E731
    clock = _StageClock(log)
    stage, finish, start = clock.stage, clock.finish, clock.start

    def stopped(name: str) -> dict[str, Any]:
        log(f"\n{signal_name()} received: the demo stopped in its {name} stage, with what it finished saved in "
            f"{output_dir}; run the same command again to resume.")
        return {"preempted": True, "stage": name, "total_seconds": round(time.perf_counter() - start, 1)}

    options = ", ".join(f"{k}={v}" for k, v in config.train.space.options.items())
    tic = stage(1, f"training the one-shot model of {config.train.space.spec} on digits: "
                   f"{config.train.train_steps} steps{', ' + options if options else ''}")
    trained = trainer.train(config.train, path("oneshot"), log=log)
    finish("train", tic)
    if trained["preempted"] or preemption.requested:  # never search a half-trained model
        return stopped("training")

    cons = config.constraints
    where = f" under {cons.describe()}" if cons.active else ""
    tic = stage(2, f"random search: scoring {config.num_random} architectures with the shared weights{where}")
    model_dir = ModelDir.open(path("oneshot"))
    space = model_dir.space
    # One scorer (one trace) for both searches, each run as `tf-oneshot search` runs it.
    shared = dict(constraints=cons, seed=config.seed, scorer=_scorer(config, model_dir), stop=preemption, log=log,
                  progress_every=5.0)
    random_path = path("search", "random.jsonl")
    random_run = search.run(model_dir, "random", config.num_random, results=random_path, **shared)
    finish("random_search", tic)
    if random_run["stopped"]:
        return stopped("random search")

    tic = stage(3, f"evolution: {config.num_evolution} architectures, population "
                                f"{config.population_size}, {config.num_parents} parents{where}")
    evolution_path = path("search", "evolution.jsonl")
    evolution_run = search.run(model_dir, "evolution", config.num_evolution, results=evolution_path,
                               population_size=config.population_size, num_parents=config.num_parents,
                               mutation_prob=config.mutation_prob, **shared)
    finish("evolution", tic)
    bn_mode = shared["scorer"].bn_mode
    del shared  # the scorer's model and images, before retraining
    if evolution_run["stopped"]:
        return stopped("evolution")

    what, sample = _retrain_sample(config, random_path, evolution_path)
    tic = stage(4, f"retraining {what} from scratch, {config.retrain_steps} steps x {len(config.seeds)} seed(s)")
    candidates = [Candidate(space.parse(r["architecture"]), r["oneshot_accuracy"]) for r in sample]
    retrain_config = config.train.replace(
        train_steps=config.retrain_steps, log_every=max(1, config.retrain_steps // 3),
    )
    retrain_path = path("retrain", "results.jsonl")
    retrained = retrain(candidates, space, retrain_config, list(config.seeds), retrain_path,
                        path("retrain", "export"), log=log, stop=preemption,
                        method="masked" if len(candidates) * len(config.seeds) >= MASKED_FROM_RUNS else "standalone")
    finish("retrain", tic)
    if retrained.preempted:
        return stopped("retrain")

    tic = stage(5, "analyzing: rank correlations, plots, report")
    analysis = analyze([random_path, evolution_path], retrain_path, output_dir, overwrite=True, log=log,
                       proxies=_proxies(model_dir, sample, config.seed), rank_by=config.rank_by)
    finish("analyze", tic)
    seconds = {k: round(v, 1) for k, v in clock.seconds.items()}
    cpu = {k: round(v, 1) for k, v in clock.cpu.items()}
    total = round(time.perf_counter() - start, 1)

    summary = _summary(output_dir, config, analysis, trained, random_run, evolution_run, space, bn_mode,
                       seconds, total)
    summary["cpu_seconds"] = cpu
    atomic_write_json(path(SUMMARY), summary)
    for line in summary_table(summary, analysis):
        log(line)
    return summary


def _proxies(model_dir: Any, records: list[dict], seed: int) -> dict[str, dict[str, float]]:
    """The training-free proxies of the retrained architectures, for the baseline rows (issue 21)."""
    from tf_oneshot.search import proxies

    archs = [r["architecture"] for r in records]
    images, labels = proxies.minibatch(model_dir, seed=seed)
    values = proxies.proxy_values(model_dir.space, [model_dir.space.parse(a) for a in archs], proxies.MODEL_PROXIES,
                                  images, labels, seed)
    return {name: dict(zip(archs, v.tolist())) for name, v in values.items()}


def _scorer(config: DemoConfig, model_dir: Any) -> Any:
    """The one-shot scorer both searches share (its `options` go into their results lines)."""
    from tf_oneshot.search.scorer import OneShotScorer

    return OneShotScorer.from_model_dir(
        model_dir, kl=config.kl, seed=config.seed, archs_per_pass=config.archs_per_pass,
        bn_mode=config.bn_mode or model_dir.space.default_bn_mode,
        recalibration_images=config.recalibration_images,
    )


def _retrain_sample(config: DemoConfig, random_path: str, evolution_path: str) -> tuple[str, list[dict]]:
    """(what is retrained, in words; their search records): the best searched, or a stratified sample."""
    from tf_oneshot.analysis.records import load_search_results

    if config.retrain_select == "best":
        return (f"the {config.num_retrain} best architectures searched (the winner first)",
                _best([random_path, evolution_path], config.num_retrain))
    random_records, _ = load_search_results(random_path)
    return (f"a stratified sample of {config.num_retrain} architectures",
            _stratified(random_records, config.num_retrain, config.seed))


def _summary(output_dir: str, config: DemoConfig, analysis: Any, trained: dict, random_run: dict,
             evolution_run: dict, space: Any, bn_mode: str, seconds: dict[str, float], total: float) -> dict[str, Any]:
    """SUMMARY's fields: what each stage produced, the rank correlations and the timings."""
    cons = config.constraints
    metrics = analysis.metrics.to_json()
    analysis_json = analysis.to_json()
    by_arch = {j.architecture: j.standalone for j in analysis.joined}
    best_standalone = by_arch.get(analysis.best_architecture)
    export_dir = os.path.join(output_dir, "retrain", "export")
    exported = {name: os.path.join(export_dir, file) for name, file in
                (("keras", "best.keras"), ("saved_model", "best_saved_model"), ("metadata", "best.json"))
                if tf.io.gfile.exists(os.path.join(export_dir, file))}
    summary = {
        "num_architectures_scored": analysis.num_architectures_scored,
        "num_random": random_run["total"],
        "num_evolution": evolution_run["total"],
        "num_retrained": metrics["num_architectures"],
        "kendall_tau": metrics["kendall_tau"],
        "kendall_tau_ci": metrics["kendall_tau_ci"],
        "spearman_rho": metrics["spearman_rho"],
        "spearman_rho_ci": metrics["spearman_rho_ci"],
        "standalone_measure": analysis.standalone_measure,
        "kendall_tau_accuracy_only": analysis_json["kendall_tau_accuracy_only"],
        "distinct_standalone_values": analysis.distinct_standalone,
        "tied_standalone_pairs": analysis.tied_pairs,
        "pairwise_accuracy": metrics["pairwise_accuracy"],
        "partial_tau_params": analysis_json["partial_tau_params"],
        "baselines": analysis_json["baselines"],
        "best_architecture": analysis.best_architecture,
        "best_standalone_validation_accuracy": best_standalone.validation_mean if best_standalone else None,
        "best_oneshot_architecture": analysis.best_oneshot_architecture,
        "best_random_oneshot_accuracy": random_run["best"][0][1] if random_run["best"] else None,
        "best_evolution_oneshot_accuracy": evolution_run["best"][0][1] if evolution_run["best"] else None,
        "evolution_winner": _winner(space, evolution_run),
        "constraints": cons.to_json(),
        "bn_mode": bn_mode,
        "oneshot_validation_accuracy": trained.get("val_accuracy"),
        "oneshot_validation_accuracy_of": trained.get("val_accuracy_of"),
        "kl_kendall_tau": None if analysis.kl_kendall_tau is None or math.isnan(analysis.kl_kendall_tau)
        else analysis.kl_kendall_tau,
        "plots": sorted(os.path.basename(p) for p in analysis.plots.values()),
        "report": os.path.basename(analysis.report),
        "export": {k: os.path.relpath(v, output_dir) for k, v in exported.items()},
        "seconds": seconds,
        "total_seconds": total,
        "config": config_json(config),
    }
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def _ci(interval: list[float] | None) -> str:
    return "" if interval is None else f" [{interval[0]:.3f}, {interval[1]:.3f}]"


def baseline_line(summary: dict[str, Any]) -> str:
    """The one-shot tau beside params, FLOPs and the best proxy (issue 21), and the partial taus given params."""
    baselines = summary["baselines"]
    proxies = {k: v for k, v in baselines.items() if k not in ("params", "flops") and v["kendall_tau"] is not None}
    shown = [k for k in ("params", "flops") if k in baselines]
    if proxies:
        shown.append(max(proxies, key=lambda k: proxies[k]["kendall_tau"]))
    text = ", ".join(f"{k}{' (best proxy)' if k in proxies else ''} {_fmt(baselines[k]['kendall_tau'])}"
                     f"{_ci(baselines[k]['kendall_tau_ci'])}" for k in shown)
    partial = ", ".join(f"{k} {_fmt(baselines[k]['partial_tau_params'])}" for k in shown[1:])
    return (f"baselines, Kendall tau vs stand-alone: {text or 'none'}; tau given params: one-shot "
            f"{_fmt(summary['partial_tau_params'])}{', ' + partial if partial else ''}")


def summary_table(summary: dict[str, Any], analysis: Any) -> list[str]:
    """The lines the demo prints at the end: stages, correlations, retrained architectures."""
    s, cpu = summary["seconds"], summary.get("cpu_seconds", {})
    rows = [
        ("train one-shot", s["train"], f"{summary['oneshot_validation_accuracy_of']} validation accuracy "
                                         f"{_fmt(summary['oneshot_validation_accuracy'])}"),
        ("random search", s["random_search"], f"{summary['num_random']} architectures, best one-shot "
                                              f"{_fmt(summary['best_random_oneshot_accuracy'])}"),
        ("evolution", s["evolution"], f"{summary['num_evolution']} architectures, best one-shot "
                                      f"{_fmt(summary['best_evolution_oneshot_accuracy'])}"),
        ("retrain", s["retrain"], f"{summary['num_retrained']} architectures, best stand-alone "
                                  f"{_fmt(summary['best_standalone_validation_accuracy'])}"),
        ("analyze", s["analyze"], f"Kendall tau {_fmt(summary['kendall_tau'])}{_ci(summary['kendall_tau_ci'])}, "
                                  f"Spearman rho {_fmt(summary['spearman_rho'])}{_ci(summary['spearman_rho_ci'])}, "
                                  f"pairwise accuracy {_fmt(summary['pairwise_accuracy'])}"),
    ]
    keys = ("train", "random_search", "evolution", "retrain", "analyze")
    lines = ["", "tf-oneshot demo: summary", f"{'stage':<16}{'seconds':>9}{'cpu s':>9}  result"]
    lines += [f"{name:<16}{sec:>9.1f}{cpu.get(key, float('nan')):>9.1f}  {text}"
              for (name, sec, text), key in zip(rows, keys)]
    lines += [f"{'total':<16}{summary['total_seconds']:>9.1f}{sum(cpu.values()):>9.1f}",
              f"stand-alone ranking: {summary['standalone_measure']}; {summary['distinct_standalone_values']} "
              f"distinct values, {summary['tied_standalone_pairs']} tied pairs; intervals: 95% bootstrap; "
              f"Kendall tau on accuracy alone {_fmt(summary.get('kendall_tau_accuracy_only'))}",
              baseline_line(summary), "",
              f"{'architecture':<32}{'one-shot':>9}{'stand-alone':>13}{'params':>10}"]
    for j in sorted(analysis.joined, key=lambda j: j.oneshot_accuracy):
        lines.append(f"{j.architecture:<32}{j.oneshot_accuracy:>9.3f}{j.standalone.validation_mean:>13.3f}"
                     f"{j.standalone.params:>10,}")
    lines += ["", f"best architecture (stand-alone): {summary['best_architecture']}",
              f"plots: {', '.join(summary['plots'])}; report: {summary['report']}"]
    return lines
