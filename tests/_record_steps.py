"""Run the imtranslate command line, recording which samples every training step received.

    python tests/_record_steps.py OUT imtranslate-arguments...      (also under torchrun)

Each process appends one JSON line per step, ``{"step": s, "names": [...]}``, to ``OUT.<rank>``
(the dataset item names, i.e. the file stems: one name per sample index). Tests of data order
(sharding, resume mid-epoch) compare these lines between runs.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys


@contextlib.contextmanager
def recording(out: str):
    """Within the block, every registered task's ``train_step`` logs its batch's names to ``out.<rank>``."""
    from imtranslate.tasks import TASKS, task_names

    task_names()  # registers every task
    rank = int(os.environ.get("RANK", 0))
    saved = {}

    def wrap(orig):
        def train_step(self, batch, step):
            with open(f"{out}.{rank}", "a") as f:
                f.write(json.dumps({"step": int(step), "names": [str(n) for n in batch["name"]]}) + "\n")
            return orig(self, batch, step)
        return train_step

    for cls in set(TASKS.values()):
        if "train_step" in vars(cls):
            saved[cls] = vars(cls)["train_step"]
            cls.train_step = wrap(saved[cls])
    try:
        yield
    finally:
        for cls, orig in saved.items():
            cls.train_step = orig


def read(out: str, rank: int = 0) -> dict[int, list[str]]:
    """step -> names of the samples that step trained on, as recorded by :func:`recording`."""
    with open(f"{out}.{rank}") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    steps = [r["step"] for r in rows]
    assert len(steps) == len(set(steps)), f"{out}.{rank}: a step was recorded twice: {steps}"
    return {r["step"]: r["names"] for r in rows}


if __name__ == "__main__":
    from imtranslate.cli import main

    with recording(sys.argv[1]):
        code = main(sys.argv[2:])
    sys.exit(code)
