"""The notebooks are committed without outputs (`make test` executes them with nbmake instead)."""

import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import clear_notebooks  # noqa: E402

NOTEBOOKS = sorted(glob.glob(os.path.join(ROOT, "notebooks", "*.ipynb")))


def test_the_notebooks_are_there():
    names = {os.path.basename(p) for p in NOTEBOOKS}
    assert {"quickstart.ipynb", "analysis.ipynb"} <= names


def test_notebooks_are_committed_without_outputs(capsys):
    rc = clear_notebooks.main(["--check", *NOTEBOOKS])
    assert rc == 0, f"notebooks with outputs (run scripts/clear_notebooks.py): {capsys.readouterr().out}"
    for path in NOTEBOOKS:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
        assert nb["metadata"]["kernelspec"]["name"] == "python3"  # the kernel nbmake and jupyter start


def test_clear_removes_outputs_counts_and_timings(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# x"},
                    {"cell_type": "code", "execution_count": 3, "metadata": {"execution": {"iopub.status.idle": "t"}},
                     "outputs": [{"output_type": "stream", "name": "stdout", "text": "1\n"}], "source": "print(1)"}],
          "metadata": {"language_info": {"name": "python", "version": "3.11.7"}}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "a.ipynb"
    path.write_text(json.dumps(nb))
    assert clear_notebooks.main(["--check", str(path)]) == 1
    assert clear_notebooks.main([str(path)]) == 0
    out = json.loads(path.read_text())
    code = out["cells"][1]
    assert code["outputs"] == [] and code["execution_count"] is None and code["metadata"] == {}
    assert code["source"] == "print(1)" and out["cells"][0] == nb["cells"][0]
    assert out["metadata"] == {"language_info": {"name": "python"}}
    assert clear_notebooks.main(["--check", str(path)]) == 0


def test_the_quickstart_command_line_is_the_notebooks_run():
    """The "same experiment from the command line" the quickstart prints composes (through Hydra, as
    experiments/lottery.py does) to a config with the same run directory as the notebook's `Config`."""
    import re
    import shlex

    from lth.api import compose
    from lth.config.schema import Config, to_dict
    from lth.runs.run_dir import content_hash

    with open(os.path.join(ROOT, "notebooks", "quickstart.ipynb"), encoding="utf-8") as f:
        cells = json.load(f)["cells"]
    code = next("".join(c["source"]) for c in cells if "cfg = Config()" in "".join(c["source"]))
    ns = {"Config": Config, "to_dict": to_dict, "RUNS": "/tmp/unused"}
    exec(code, ns)  # noqa: S102  (the notebook's own cell)
    text = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    commands = re.findall(r"`python experiments/lottery.py ([^`]*)`", text)
    assert len(commands) == 1, commands
    cli = compose(shlex.split(commands[0]))
    nb = ns["cfg"]
    assert (cli.model.name, cli.dataset.name) == (nb.model.name, nb.dataset.name)
    assert content_hash(cli) == content_hash(nb)
