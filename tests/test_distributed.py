"""Two CPU processes under torchrun (gloo): same losses as one process with the same total
batch, and batch inference that writes every output exactly once."""
import json
import os
import subprocess
import sys

import pytest

from conftest import tiny_overrides


def _torchrun(args, cwd, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "imtranslate", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _losses(run):
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == "train"}


def test_two_processes_match_one_and_shard_inference(tmp_path):
    from imtranslate.cli import main

    over = tiny_overrides("multires", tmp_path, steps=3) + ["train.batch_size=4", "train.threads=1",
                                                            "data.synthetic.n_train=12", "data.flip=false"]
    single = [o.replace("train.out_dir=" + str(tmp_path / "runs"), f"train.out_dir={tmp_path / 'one'}") for o in over]
    assert main(["train", *single]) == 0
    ref = _losses(next((tmp_path / "one").iterdir()))

    double = [o.replace("train.out_dir=" + str(tmp_path / "runs"), f"train.out_dir={tmp_path / 'two'}") for o in over]
    proc = _torchrun(["train", *double], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list((tmp_path / "two").iterdir())
    assert len(runs) == 1  # one run folder, written by rank 0 only
    got = _losses(runs[0])
    assert sorted(got) == sorted(ref) == [1, 2, 3]
    for step in ref:
        for k in ("loss_G", "loss_D"):
            assert got[step][k] == pytest.approx(ref[step][k], rel=1e-4, abs=1e-5), (step, k)

    # batch inference: 2 processes share the files, every output written exactly once
    ckpt = runs[0] / "checkpoints" / "last.safetensors"
    labels = tmp_path / "synthetic" / "val" / "label"
    proc = _torchrun(["translate", str(ckpt), str(labels), "-o", str(tmp_path / "out"), "--quiet"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = [int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("wrote ")]
    n_inputs = len(list(labels.glob("*.png")))
    assert sorted(counts) == [n_inputs // 2, n_inputs - n_inputs // 2]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(p.name for p in labels.glob("*.png"))
