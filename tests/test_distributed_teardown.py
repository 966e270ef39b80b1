"""A finished torchrun job must exit 0: after ``distributed.cleanup()`` no gloo thread may be
left to run into the interpreter's teardown (where they now and then aborted rank 1 with
SIGABRT, "terminate called without an active exception", after a complete run).

The cause was import order: torch.optim imports torch._dynamo on its first use, and
torch._dynamo imported after ``init_process_group`` keeps references to the default group, so
``destroy_process_group`` could not free it. This checks the outcome the abort needed (gloo
threads alive after cleanup) deterministically, instead of waiting for the rare abort.
"""
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="lists threads through /proc (Linux)")

SCRIPT = textwrap.dedent("""
    import os, sys
    import torch
    from imtranslate.train import distributed

    distributed.setup("cpu")
    # what every training run does after joining the group: build Adam (the first torch.optim
    # use imports torch._dynamo), all-reduce, then leave
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.grad = torch.ones(3)
    distributed.average_gradients([p], 2)
    opt.step()
    distributed.barrier()
    distributed.cleanup()
    names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
    left = [n for n in names if "gloo" in n]
    print(f"rank {os.environ['RANK']}: threads after cleanup {sorted(names)}")
    sys.exit(3 if left else 0)
""")


def test_cleanup_ends_every_gloo_thread(tmp_path):
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("threads after cleanup") == 2
