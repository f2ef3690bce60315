"""The resilience suite (tests/integration/resilience) with its figures as the last line.

`make resilience` runs the full form: 20 trials of each fault, 10 minutes of load at 200 reports/s,
schemathesis with 50 examples per operation. `make test` runs the short form (`--short`): 3 trials,
20 s of load, 10 examples. The last line is one JSON object: trials, lost, duplicated, server_errors,
recovery_s_max, load_p99_ms (and the details).

    .venv/bin/python bench/resilience.py [--short] [--trials N] [--load-seconds S] [--seed N]
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", action="store_true", help="the CI form: 3 trials, 20 s of load")
    parser.add_argument("--trials", type=int)
    parser.add_argument("--load-seconds", type=float)
    parser.add_argument("--examples", type=int, help="schemathesis examples per operation")
    parser.add_argument("--seed", type=int, help="draw the fault moments reproducibly")
    args = parser.parse_args()
    trials = args.trials or (3 if args.short else 20)
    load_seconds = args.load_seconds or (20.0 if args.short else 600.0)
    examples = args.examples or (10 if args.short else 50)
    with tempfile.TemporaryDirectory() as scratch:
        figures_path = Path(scratch) / "figures.json"
        env = {
            **os.environ,
            "COIN_RESILIENCE_TRIALS": str(trials),
            "COIN_LOAD_SECONDS": str(load_seconds),
            "COIN_SCHEMATHESIS_EXAMPLES": str(examples),
            "COIN_RESILIENCE_FIGURES": str(figures_path),
        }
        if args.seed is not None:
            env["COIN_RESILIENCE_SEED"] = str(args.seed)
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/integration/resilience",
        ]
        outcome = subprocess.run(command, cwd=REPO, env=env, check=False)
        figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    figures["passed"] = outcome.returncode == 0
    figures["machine"] = f"{platform.machine()}, {os.cpu_count()} cpus"
    print(json.dumps(figures))
    sys.exit(outcome.returncode)


if __name__ == "__main__":
    main()
