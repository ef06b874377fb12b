"""Verdicts against controls (`lth.runs.results.compare_to_control`, issue 25): the ticket *beats* a
control by the winning-ticket rule's quantities (early-stop accuracy and early-stop step, not the
final accuracy) with the spread across replicates; the printed table says "winning (vs dense)"
and "beats <control>", never an unqualified "winning ticket"."""

from __future__ import annotations

import pandas as pd
import pytest

from lth.analysis import metrics
from lth.runs import results


def rows(kind, level, acc, es_acc, es_step):
    return [{"level": level, "replicate": r, "kind": kind, "density": 1.0 if level == 0 else 0.5, "test_accuracy": a,
             "early_stop_test_accuracy": e, "early_stop_step": s} for r, (a, e, s) in enumerate(zip(acc, es_acc, es_step))]


def verdict(ticket, control):
    return results.compare_to_control(rows("ticket", 1, *ticket), rows("reinit", 1, *control))


def test_final_gap_negative_but_early_stop_gap_positive_beats_the_control():
    """LeNet's case in the issue: final gap -0.06 points, early-stop gap +0.09: the ticket beats
    reinit (the old rule, final gap > 0, said no)."""
    c = verdict(([0.9800, 0.9810], [0.9820, 0.9822], [3000, 3200]), ([0.9806, 0.9816], [0.9811, 0.9813], [5000, 5200]))
    assert c["gap"] == pytest.approx(-0.0006) and c["es_gap"] == pytest.approx(0.0009)
    assert c["es_margin"] == pytest.approx(0.0001) and c["es_step_gap"] == -2000
    assert c["beats"] is True


def test_final_gap_positive_but_early_stop_gap_negative_does_not_beat_the_control():
    c = verdict(([0.95, 0.95], [0.90, 0.90], [300, 300]), ([0.93, 0.93], [0.92, 0.92], [300, 300]))
    assert c["gap"] == pytest.approx(0.02) and c["es_gap"] == pytest.approx(-0.02)
    assert c["beats"] is False


def test_the_early_stop_gap_must_exceed_the_larger_population_std_and_the_step_be_no_later():
    # es gap +0.02; the control's population std 0.03 (0.89, 0.95) > the ticket's 0: within the spread
    assert verdict(([0.9, 0.9], [0.94, 0.94], [100, 100]), ([0.9, 0.9], [0.89, 0.95], [100, 100]))["beats"] is False
    # the same gap with less spread (0.01): beats; exactly at the margin (gap 0.01 = std 0.01): does not
    assert verdict(([0.9, 0.9], [0.94, 0.94], [100, 100]), ([0.9, 0.9], [0.91, 0.93], [100, 100]))["beats"] is True
    assert verdict(([0.9, 0.9], [0.5, 0.5], [100, 100]), ([0.9, 0.9], [0.48, 0.50], [100, 100]))["beats"] is False
    # higher early-stop accuracy, but stopping later than the control: not the winning-ticket rule
    late = verdict(([0.9, 0.9], [0.94, 0.94], [300, 300]), ([0.9, 0.9], [0.90, 0.90], [200, 200]))
    assert late["es_step_gap"] == 100 and late["beats"] is False
    # one replicate: no spread, the rule is es gap > 0 and step no later
    assert verdict(([0.9], [0.91], [100]), ([0.95], [0.90], [100]))["beats"] is True
    # no validation data: no early stop, no verdict (the final gap is still given)
    nan = float("nan")
    none = verdict(([0.9, 0.9], [nan, nan], [nan, nan]), ([0.8, 0.8], [nan, nan], [nan, nan]))
    assert none["beats"] is None and none["gap"] == pytest.approx(0.1)


def _run_table():
    """`experiment=mnist1d_rewinding rewind=lr levels=3`'s situation: the level is a winning ticket
    against the dense network while both controls beat it."""
    df = pd.DataFrame(rows("ticket", 0, [0.60, 0.62], [0.58, 0.60], [500, 500]) + rows("ticket", 1, [0.62, 0.63], [0.61, 0.61], [300, 300])
                      + rows("reinit", 1, [0.64, 0.65], [0.63, 0.63], [300, 300])
                      + rows("random_prune", 1, [0.67, 0.68], [0.66, 0.66], [200, 200]))
    return df, results.summarize(df)


def test_the_table_says_winning_vs_dense_and_beats_per_control():
    df, t = _run_table()
    assert bool(t.loc[1, "winning_ticket"]) is True
    assert bool(t.loc[1, "beats_reinit"]) is False and bool(t.loc[1, "beats_random_prune"]) is False
    assert t.loc[1, "es_gap_reinit"] == pytest.approx(-0.02) and t.loc[1, "gap_random_prune"] == pytest.approx(-0.05)
    text = results.format_summary(t)
    header = text.splitlines()[0]
    assert "winning (vs dense)" in header and "winning ticket" not in text
    for c in ("reinit", "random_prune"):
        assert f"beats {c}" in header and f"{c} gap %" in header and f"{c} es gap %" in header and f"{c} acc %" in header
    last = text.splitlines()[-1].split()
    assert last[:2] == ["1", "50.0%"] and last.count("no") == 2 and "yes" in last
    assert "-" in text.splitlines()[2].split()  # the dense level: no control, no verdict
    legend = results.verdict_legend(t)
    assert "winning (vs dense)" in legend and "beats <control> (reinit, random_prune)" in legend
    assert "larger population std" in legend
    levels = metrics.level_metrics(df)
    assert levels[levels.kind == "reinit"].ticket_beats.tolist() == [False]
    assert "winning (vs dense)" in metrics.format_levels(levels) and "ticket beats it" in metrics.format_levels(levels)


def test_without_validation_data_beats_is_na_and_printed_n_a():
    df, _ = _run_table()
    df["early_stop_test_accuracy"], df["early_stop_step"] = float("nan"), float("nan")
    t = results.summarize(df)
    assert pd.isna(t.loc[1, "beats_reinit"]) and str(t["beats_reinit"].dtype) == "boolean"
    line = results.format_summary(t).splitlines()[-1].split()
    assert line.count("n/a") >= 3  # early-stop step, accuracy, winning, and both beats columns
    assert results.format_summary(t).splitlines()[-2].split()[-1] == "-"  # the dense level: not compared
