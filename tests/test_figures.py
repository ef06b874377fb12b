"""lth.analysis.figures and scripts/figures.py: the paper-style figures of synthetic tables (lines per kind,
log density axis decreasing to the right, the 2% threshold), the script on a trimmed copy and on a
tiny real run (PNG and PDF files, exit code 2 for a bad directory), and the figures in W&B."""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from lth.analysis import figures
from lth.api import Run

from conftest import small_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "figures.py")
CONTROLS = ("reinit", "random_prune")
LEVELS = 6  # densities 0.8^L: 100, 80, 64, 51.2, 41.0, 32.8 %


def _script():
    spec = importlib.util.spec_from_file_location("figures_script", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def synthetic_results(replicates=3, early_stop=True, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for level in range(LEVELS):
        for kind in ("ticket",) + (CONTROLS if level else ()):
            for r in range(replicates):
                acc = 0.97 + (0.002 * level if kind == "ticket" else -0.003 * level) + rng.normal(0, 0.001)
                rows.append({"level": level, "replicate": r, "kind": kind, "density": 0.8 ** level,
                             "test_accuracy": acc,
                             "early_stop_step": 1000 + 100 * level * (kind != "ticket") + 10 * r if early_stop else np.nan,
                             "early_stop_test_accuracy": acc + 0.001 if early_stop else np.nan})
    return pd.DataFrame(rows)


def synthetic_history(results: pd.DataFrame, steps=(100, 200, 300, 400)) -> pd.DataFrame:
    rows = []
    for r in results.itertuples():
        for i, s in enumerate(steps):
            rows.append({"level": r.level, "kind": r.kind, "replicate": r.replicate, "step": s,
                         "test_accuracy": r.test_accuracy * (0.9 + 0.1 * i / (len(steps) - 1)), "test_loss": 0.1,
                         "val_accuracy": np.nan, "val_loss": np.nan})
    return pd.DataFrame(rows)


def synthetic_instability(levels=(-1, 3), steps=(0, 100, 500, 2000), replicates=2):
    rows, curves = [], []
    alphas = np.linspace(0, 1, 30)
    for level in levels:
        for step in steps:
            for r in range(replicates):
                barrier = 0.2 / (1 + step / 100) + 0.001 * r
                e = 0.1 + 4 * barrier * alphas * (1 - alphas)
                rows.append({"point": f"{step}it", "step": step, "replicate": r, "level": level,
                             "density": 1.0 if level < 0 else 0.8 ** level, "barrier": barrier, "error_start": 0.1,
                             "error_end": 0.1, "max_error": 0.1 + barrier})
                if level == levels[0]:
                    curves += [{"point": f"{step}it", "step": step, "replicate": r, "alpha": a, "test_error": x,
                                "test_loss": 0.3} for a, x in zip(alphas, e)]
    return pd.DataFrame(rows), pd.DataFrame(curves)


def _labels(fig, i=0):
    return fig.axes[i].get_legend_handles_labels()[1]


def _is_log_decreasing(ax):
    lo, hi = ax.get_xlim()
    return ax.get_xscale() == "log" and lo > hi and ax.xaxis_inverted()


# -- the figure functions ------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["early_stop", "final"])
def test_accuracy_vs_density_one_line_per_kind_on_a_decreasing_log_axis(which):
    res = synthetic_results()
    fig = figures.accuracy_vs_density(res, which)
    ax = fig.axes[0]
    assert len(ax.containers) == 3  # ticket, reinit, random_prune: mean with min/max bars
    assert _labels(fig) == ["dense network (mean)", "ticket (IMP, rewound)", "random reinitialisation",
                            "random pruning (layer-wise)"]
    assert _is_log_decreasing(ax)
    assert [t.get_text() for t in ax.get_xticklabels()][0] == "100"
    styles = {c.get_label(): c.lines[0].get_linestyle() for c in ax.containers}
    assert styles["ticket (IMP, rewound)"] == "-" and styles["random reinitialisation"] == "--"
    # The ticket's line: mean over replicates in percent at each level's density, min/max bars.
    ticket = ax.containers[0]
    col = figures.ACCURACY_COLUMNS[which]
    expect = 100 * res[res.kind == "ticket"].groupby("level")[col].mean().to_numpy()
    np.testing.assert_allclose(ticket.lines[0].get_ydata(), expect)
    x = sorted(np.asarray(ticket.lines[0].get_xdata(), float), reverse=True)
    assert x == pytest.approx([100 * 0.8 ** lv for lv in range(LEVELS)])


def test_early_stop_figures_need_validation_data():
    res = synthetic_results(early_stop=False)
    with pytest.raises(ValueError, match="validation"):
        figures.accuracy_vs_density(res, "early_stop")
    with pytest.raises(ValueError, match="validation"):
        figures.early_stop_vs_density(res)
    run = Run(res, pd.DataFrame(), {}, {}, "run", None, None)
    assert sorted(figures.run_figures(run)) == ["accuracy_vs_density_final"]
    fig = figures.early_stop_vs_density(synthetic_results())
    assert len(fig.axes[0].containers) == 3 and _is_log_decreasing(fig.axes[0])


def test_density_ticks_thin_the_ladder_like_frankle_and_carbin():
    ladder = [0.8 ** lv for lv in range(21)]
    ticks = figures.spread_ticks(ladder)
    assert ticks[0] == 1.0 and set(ticks) <= set(ladder) and ticks[-1] == ladder[-1]
    ratios = np.array(ticks[:-2]) / np.array(ticks[1:-1])
    assert (ratios >= 1.69).all() and len(ticks) <= 9
    assert figures.percent_label(0.513) == "51.3" and figures.percent_label(0.07) == "7.0"
    assert figures.percent_label(1.0) == "100" and figures.percent_label(0.0005) == "0.05"


def test_accuracy_vs_iteration_tickets_solid_and_reinit_dashed_per_density():
    res = synthetic_results()
    hist = synthetic_history(res)
    fig = figures.accuracy_vs_iteration(hist, [0, 2], results=res)
    ax = fig.axes[0]
    assert _labels(fig) == ["100% dense", "64.0% ticket", "64.0% reinit"]
    assert [ln.get_linestyle() for ln in ax.get_lines()] == ["-", "-", "--"]
    assert ax.get_lines()[1].get_color() == ax.get_lines()[2].get_color()  # one colour per density
    mean = 100 * hist[(hist.level == 2) & (hist.kind == "ticket")].groupby("step").test_accuracy.mean()
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata(), mean.to_numpy())
    # Densities pick the nearest level; by default 4 levels spread over the densities.
    same = figures.accuracy_vs_iteration(hist, [1.0, 0.63], results=res)
    assert _labels(same) == _labels(fig)
    default = figures.accuracy_vs_iteration(hist, results=res, controls=())
    assert len(default.axes[0].get_lines()) == 4 and _labels(default)[0] == "100% dense"
    with pytest.raises(ValueError, match="level 9"):
        figures.accuracy_vs_iteration(hist, [9], results=res)


def test_barrier_vs_point_one_line_per_level_and_the_2_percent_threshold():
    inst, _ = synthetic_instability()
    fig = figures.barrier_vs_point(inst)
    ax = fig.axes[0]
    assert len(ax.containers) == 2
    assert _labels(fig) == ["stability threshold (2%)", "dense network", "IMP level 3 (51.2% weights)"]
    threshold = [ln for ln in ax.get_lines() if ln.get_label().startswith("stability")][0]
    assert list(threshold.get_ydata()) == [2.0, 2.0]
    assert ax.get_xscale() == "symlog"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "100", "500", "2K"]
    np.testing.assert_allclose(ax.containers[0].lines[0].get_ydata(),
                               100 * inst[inst.level == -1].groupby("step").barrier.mean().to_numpy())


def test_interpolation_curves_one_line_per_rewind_point():
    _, curves = synthetic_instability()
    fig = figures.interpolation_curves(curves)
    ax = fig.axes[0]
    assert _labels(fig) == ["k = 0", "k = 100", "k = 500", "k = 2K"]
    assert ax.get_xlim() == (0, 1)
    top = ax.get_lines()[0].get_ydata()
    assert len(top) == 30 and top.max() == pytest.approx(100 * (0.1 + 0.2 + 0.001 / 2), abs=0.1)
    # several levels: one panel each
    two = pd.concat([curves.assign(level=-1, density=1.0), curves.assign(level=2, density=0.64)])
    assert len([a for a in figures.interpolation_curves(two).axes if a.get_visible()]) == 2


def test_accuracy_vs_compression_one_line_per_rewinding_mode():
    res = synthetic_results()
    lr = res.assign(test_accuracy=res.test_accuracy + 0.01)
    fig = figures.accuracy_vs_compression({"weights": res, "lr": lr})
    ax = fig.axes[0]
    assert len(ax.containers) == 2
    assert _labels(fig) == ["dense network", "weight rewinding", "learning-rate rewinding"]
    assert ax.get_xscale() == "log" and not ax.xaxis_inverted()
    x = ax.containers[0].lines[0].get_xdata()
    assert x[0] == pytest.approx(1 / 0.8) and x[-1] == pytest.approx(1 / 0.8 ** (LEVELS - 1))
    t = res[res.kind == "ticket"]
    dense = t[t.level == 0].test_accuracy.mean()
    np.testing.assert_allclose(ax.containers[0].lines[0].get_ydata(),
                               100 * (t[t.level > 0].groupby("level").test_accuracy.mean() - dense).to_numpy())
    both = pd.concat([res.assign(**{"rewind.mode": "weights"}), lr.assign(**{"rewind.mode": "lr"})])
    assert _labels(figures.accuracy_vs_compression(both)) == _labels(fig)
    with pytest.raises(ValueError, match="rewind.mode"):
        figures.accuracy_vs_compression(res)


def test_a_short_run_labels_every_density_it_has():
    """A 3-level run (100, 80, 64, 51.2%): each of its densities has a tick label (a long ladder is
    still thinned, above)."""
    res = synthetic_results()
    res = res[res.level <= 3]
    for fig in (figures.accuracy_vs_density(res, "final"), figures.early_stop_vs_density(res)):
        assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["100", "80.0", "64.0", "51.2"]


def test_accuracy_vs_iteration_shows_the_first_evaluation():
    """The first evaluation, far below the plateau (32.6% against 97%), is inside the y axis, as is
    every other plotted point."""
    res = synthetic_results()
    hist = synthetic_history(res, steps=(100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1100, 1200))
    hist.loc[hist.step == 100, "test_accuracy"] = 0.326
    fig = figures.accuracy_vs_iteration(hist, [0, 2], results=res)
    ax = fig.axes[0]
    ys = np.concatenate([ln.get_ydata() for ln in ax.get_lines()])
    lo, hi = ax.get_ylim()
    assert lo < 32.6 and lo <= ys.min() and hi >= ys.max()


def _run(res, **config):
    base = {"model": {"name": "mlp"}, "dataset": {"name": "mnist1d"},
            "pruning": {"method": "magnitude", "scope": "layerwise", "schedule": "iterative", "fraction": 0.2},
            "rewind": {"mode": "weights", "point": "0it"}}
    for section, values in config.items():
        base[section] = {**base.get(section, {}), **values}
    return Run(res, pd.DataFrame(), base, {}, "run", None, None)


def test_a_branchs_title_says_its_mask_and_weights():
    res = synthetic_results().assign(kind="branch")
    run = _run(res, branch={"source": "/runs/src", "levels": [2, 4], "mask": "shuffle_layerwise", "weights": "rewind"})
    for name, fig in figures.run_figures(run).items():
        title = fig.axes[0].get_title()
        assert "branch of level(s) 2, 4: shuffle_layerwise mask, rewind weights" in title, (name, title)
    plain = figures.run_title(_run(res).config)
    assert "branch" not in plain and "mask" not in plain


@pytest.mark.parametrize("mode,how", [("weights", "rewound"), ("lr", "learning-rate rewinding"),
                                      ("finetune", "fine-tuned")])
def test_the_legend_says_how_the_tickets_were_trained_again(mode, how):
    run = _run(synthetic_results(), rewind={"mode": mode})
    figs = figures.run_figures(run)
    for name in ("accuracy_vs_density_early_stop", "accuracy_vs_density_final", "early_stop_vs_density"):
        labels = _labels(figs[name])
        assert f"ticket (IMP, {how})" in labels, (name, labels)
        assert mode == "weights" or not any("rewound" in x for x in labels)
    oneshot = _run(synthetic_results(), pruning={"method": "synflow", "schedule": "oneshot"}, rewind={"mode": "lr"})
    assert "ticket (synflow, oneshot, learning-rate rewinding)" in _labels(figures.run_figures(oneshot)["accuracy_vs_density_final"])


# -- the script and draw_run -------------------------------------------------------------------

def _trimmed(root, name, results, history=None, config=None):
    d = root / name
    d.mkdir(parents=True)
    results.to_csv(d / "results.csv", index=False)
    if history is not None:
        history.to_csv(d / "history.csv", index=False)
    (d / "config.yaml").write_text(yaml.safe_dump(config or {"model": {"name": "mlp"}, "dataset": {"name": "mnist1d"},
                                                             "rewind": {"mode": "weights", "point": "0it"}}))
    (d / "summary.json").write_text("{}")
    return str(d)


def test_script_draws_trimmed_tables_and_the_rewinding_comparison(tmp_path, capsys):
    res = synthetic_results()
    _trimmed(tmp_path / "results", "weights", res, synthetic_history(res))
    _trimmed(tmp_path / "results", "lr", res.assign(test_accuracy=res.test_accuracy + 0.01),
             config={"model": {"name": "mlp"}, "dataset": {"name": "mnist1d"}, "rewind": {"mode": "lr", "point": "0it"}})
    inst, curves = synthetic_instability()
    lmc = tmp_path / "results" / "lmc"
    lmc.mkdir()
    inst.to_csv(lmc / "instability.csv", index=False)
    curves.to_csv(lmc / "curves.csv", index=False)
    (lmc / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "mlp"}, "dataset": {"name": "mnist1d"}}))
    out = tmp_path / "results" / "figures"
    out.mkdir()  # a glob over results/*/ names the out folder too: it is skipped
    args = sorted(glob.glob(str(tmp_path / "results" / "*") + "/"))
    assert _script().main(args + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    names = {os.path.relpath(p, out) for p in printed}
    assert {"weights/accuracy_vs_density_early_stop.png", "weights/early_stop_vs_density.pdf",
            "weights/accuracy_vs_iteration.png", "lr/accuracy_vs_density_final.png",
            "lmc/barrier_vs_point.png", "lmc/interpolation_curves.pdf",
            "compare_mlp_mnist1d/accuracy_vs_compression.png"} <= names
    assert "lr/accuracy_vs_iteration.png" not in names  # no history there
    for p in printed:
        assert os.path.getsize(p) > 2000, p


def test_script_exits_2_with_a_message_for_a_bad_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    for bad in [str(tmp_path / "missing"), str(tmp_path / "empty")]:
        p = subprocess.run([sys.executable, SCRIPT, bad, "--out", str(tmp_path / "out")], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 2
        assert bad in p.stderr and ("no such directory" in p.stderr or "not a run directory" in p.stderr)
    assert not (tmp_path / "out").exists()


def test_script_draws_what_it_can_from_a_run_a_sweep_folder_and_other_folders(tmp_path):
    """A run, a sweep folder (jobs/*.json naming runs elsewhere), a Deep Compression folder and an
    empty folder: the runs are drawn, each other path is named once with why, exit code 0."""
    import json

    res = synthetic_results()
    one = _trimmed(tmp_path / "runs", "one", res, synthetic_history(res))
    sweep = tmp_path / "runs" / "multirun" / "2026-12-06" / "09-00-00"
    (sweep / "jobs").mkdir(parents=True)
    for i, frac in enumerate((0.3, 0.6)):
        run = _trimmed(tmp_path / "runs", f"job{i}", res, synthetic_history(res))
        (sweep / "jobs" / f"{i:04d}.json").write_text(json.dumps(
            {"job": i, "overrides": [f"pruning.fraction={frac}"], "status": "done", "run_dir": run}))
    (sweep / "jobs" / "0002.json").write_text(json.dumps({"job": 2, "overrides": [], "status": "failed", "error": "x"}))
    comp = tmp_path / "runs" / "compress-abc"
    comp.mkdir()
    (comp / "report.csv").write_text("stage,accuracy\ndense,0.9\n")
    (tmp_path / "notarun").mkdir()
    out = tmp_path / "figs"
    p = subprocess.run([sys.executable, SCRIPT, one, str(sweep), str(comp), str(tmp_path / "notarun"), "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    drawn = {os.path.relpath(f, out).split(os.sep)[0] for f in p.stdout.split()}
    assert {"one", "job0", "job1"} <= drawn
    skipped = [line for line in p.stderr.splitlines() if "skipped" in line]
    assert len(skipped) == 2, p.stderr
    assert any(str(tmp_path / "notarun") in line and "not a run directory" in line for line in skipped)
    assert any(str(comp) in line and "Deep Compression" in line for line in skipped)


def test_script_exits_2_when_nothing_is_drawn(tmp_path):
    (tmp_path / "empty").mkdir()
    sweep = tmp_path / "multirun" / "d" / "t"
    (sweep / "jobs").mkdir(parents=True)
    (sweep / "jobs" / "0000.json").write_text('{"job": 0, "overrides": [], "status": "failed", "error": "x"}')
    p = subprocess.run([sys.executable, SCRIPT, str(tmp_path / "empty"), str(sweep), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert str(tmp_path / "empty") in p.stderr and str(sweep) in p.stderr and "no finished" in p.stderr
    assert not (tmp_path / "out").exists()


# -- a tiny real run: the script on it, and its figures in W&B -------------------------------------

@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    from lth.analysis import reports
    from lth.lottery import levels as lottery
    from lth.config.schema import ModelConfig, TrainConfig

    cfg = small_config(tmp_path_factory.mktemp("figures"), levels=2, replicates=2, controls=["reinit"],
                       model=ModelConfig(name="mlp", widths=[16]),
                       train=TrainConfig(duration="40it", batch_size=100, eval_every="20it"))
    cfg.logger.wandb.mode = "offline"
    lines = []
    out = lottery.run(cfg, echo=lines.append, reports=reports.lottery)  # as lth.run and experiments/lottery.py ask
    return out.run_dir, lines


def test_script_on_a_real_run_writes_png_and_pdf(real_run, tmp_path):
    run_dir, _ = real_run
    p = subprocess.run([sys.executable, SCRIPT, run_dir, "--out", str(tmp_path), "--title", "tiny"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    files = p.stdout.split()
    name = os.path.basename(run_dir)
    for fig in ["accuracy_vs_density_early_stop", "early_stop_vs_density", "accuracy_vs_density_final",
                "accuracy_vs_iteration"]:
        for ext in ("png", "pdf"):
            path = str(tmp_path / name / f"{fig}.{ext}")
            assert path in files and os.path.getsize(path) > 2000
    with open(str(tmp_path / name / "accuracy_vs_iteration.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_run_logged_to_wandb_gets_its_figures_as_images(real_run):
    run_dir, lines = real_run
    assert not any("not logged" in line for line in lines), lines
    summary = [d for d in glob.glob(os.path.join(run_dir, "wandb", "offline-run-*")) if
               glob.glob(os.path.join(d, "files", "media", "table", "results_*.table.json"))]
    assert len(summary) == 1  # the results, metrics and figures share one summary run
    images = glob.glob(os.path.join(summary[0], "files", "media", "images", "figures", "*.png"))
    names = {os.path.basename(p).rsplit("_", 2)[0] for p in images}
    assert {"accuracy_vs_density_final", "accuracy_vs_iteration", "early_stop_vs_density"} <= names, images
    assert all(os.path.getsize(p) > 2000 for p in images)
