"""Reports of a finished run for W&B: what the entry points ask for after the run itself.

The level loop (`lth.lottery.levels.run`) and the instability analysis (`lth.analysis.instability.run`)
write their tables and hand their W&B run to a `reports` callable when the caller gives one; they do
not import the figures and metrics themselves (issue 26: imports run from the entry points down).
`lth.api.run` and `experiments/*.py` pass the functions here:

    lottery(logger, run_dir, echo)        the ticket metrics (`lth.analysis.metrics`: tables and headline
                                          numbers) and the run's figures (`lth.analysis.figures.draw_run`)
                                          in the lottery run's W&B summary run
    instability(wandb_run, table, curves, echo)
                                          the barrier-against-rewind-point and interpolation-curve figures
                                          as images in the instability run's W&B run

A failure in a report is printed, not raised: the run's tables are already written.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def lottery(logger, run_dir: str, echo: Callable[[str], None] = print) -> None:
    """Ticket metrics and figures of the finished lottery run `run_dir` into `logger`'s summary run
    (`lth.integrations.wandb_logger.WandbLogger`, enabled)."""
    ticket_metrics(logger, run_dir, echo)
    figures(logger, run_dir, echo)


def ticket_metrics(logger, run_dir: str, echo: Callable[[str], None] = print) -> None:
    """The finished run's ticket metrics (`lth.analysis.metrics`) into its W&B summary run; a failure there
    is reported, not raised: the run's tables are already written."""
    from lth.analysis import metrics

    try:
        m = metrics.ticket_metrics(run_dir)
        logger.log_metrics(m, metrics.headline(m))
    except Exception as e:  # noqa: BLE001
        echo(f"ticket metrics not logged to W&B ({type(e).__name__}: {e})")


def figures(logger, run_dir: str, echo: Callable[[str], None] = print) -> None:
    """The run's figures (`lth.analysis.figures.draw_run` of its tables) as images in its W&B summary run;
    a failure there is reported, not raised: the run's tables are already written."""
    import tempfile

    try:
        from lth.analysis import figures as F

        with tempfile.TemporaryDirectory() as tmp:  # W&B copies each image when it is logged
            logger.log_figures(F.draw_run(run_dir, tmp, formats=("png",)))
    except Exception as e:  # noqa: BLE001
        echo(f"figures not logged to W&B ({type(e).__name__}: {e})")


def instability(wandb_run, table, curves, echo: Callable[[str], None] = print) -> None:
    """The instability figures (`figures.barrier_vs_point`, `figures.interpolation_curves`) as images in
    the analysis's W&B run; a drawing failure must not fail a finished analysis."""
    try:
        import wandb

        from lth.analysis import figures as F

        def image(fig):  # pixels through Agg: no pyplot, no global backend
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            canvas = FigureCanvasAgg(fig)
            canvas.draw()
            return wandb.Image(np.asarray(canvas.buffer_rgba())[..., :3])

        wandb_run.log({"figures/barrier_vs_point": image(F.barrier_vs_point(table)),
                       "figures/interpolation_curves": image(F.interpolation_curves(curves))})
    except Exception as e:  # noqa: BLE001
        echo(f"W&B: the instability figures were not drawn ({type(e).__name__}: {e})")
