#!/usr/bin/env python
"""The Markdown table of `scripts/preset_times.sh`'s measurements: per preset, the measured level
times and the extrapolated whole experiment (levels x replicates as the preset sets them).

    python scripts/preset_times_table.py preset_times/
"""

import glob
import json
import os
import sys


def main(folder: str) -> None:
    print("| preset | device | replicates x levels | steps per level | level 0 (s) | later level (s) | whole preset |")
    print("|---|---|---|---|---|---|---|")
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        r = json.load(open(path))
        total = r["figure_seconds"]
        human = f"{total / 3600:.1f} h" if total >= 3600 else f"{total / 60:.1f} min"
        print(f"| `{r['preset']}` | {r['device']} | {r['replicates']} x {r['figure_levels']} | {r['full_steps']:,} "
              f"| {r['seconds_level0']:.0f} | {r['seconds_per_level']:.0f} | {human} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "preset_times")
