"""Channel reduction in rounds while a model trains (SPEC S5): ``model.prune_rounds``.

A task whose model config has ``prune_rounds > 0`` (``faceenhance``; see
:meth:`imtranslate.tasks.base.Task.prune_options`) trains in ``prune_rounds + 1`` rounds of equal
length. At the end of each of the first ``prune_rounds`` rounds the loop runs one round of
:func:`imtranslate.prune.rounds.prune_in_rounds` — the code ``imtranslate compress`` drives, not a
second implementation:

1. every prunable conv layer (a Torch-Pruning group) is cut by its ratio (``model.prune_ratio`` at
   first), its least important channels first;
2. each cut alone is checked against the quality index ``model.prune_quality`` (``psnr:30``: the
   cut net's output against the output of the net before the cut, on the held-out inputs — what
   the cut lost); a layer that breaks it is restored and its ratio halved for the next round;
3. the passing cuts are applied together and training goes on with the smaller net: the next
   training round is its fine-tune (no separate fine-tuning, and no check of the whole right after
   the cut, which would judge the net before it has had a step to recover).

Held-out figures are taken right after each cut (``metrics.jsonl``, kind ``val``), the round's
MACs / parameters / quality go to the log, ``metrics.jsonl`` (kind ``prune``) and TensorBoard.
The ratios, the rounds done and the per-round table are task state (saved in checkpoints,
restored on resume); the pruned widths are in the checkpoint's net spec (``nets/surgery.py``), so
``--resume``, predictors, ``init_from`` and teachers rebuild the smaller net alone.
"""
from __future__ import annotations

import copy

from ..errors import ConfigError
from ..prune.rounds import parse_quality, prune_in_rounds


class RoundPruner:
    """Prunes ``task``'s generator at the round boundaries of a run of ``steps`` steps."""

    def __init__(self, task, val_loader, steps: int, world: int = 1, n_batches: int = 2):
        opts = task.prune_options()
        if world > 1:
            raise ConfigError("model.prune_rounds runs in a single process (a cut must be the same in every "
                              "process); train without torchrun, or prune afterwards with imtranslate compress")
        self.task, self.val_loader, self.n_batches = task, val_loader, n_batches
        self.rounds, self.ratio = int(opts["rounds"]), float(opts["ratio"])
        self.quality = parse_quality(opts["quality"])
        self.importance = opts.get("importance", "activation")
        # round k (1-based) ends at step round(k * steps / (rounds + 1))
        self.boundaries = [round(k * steps / (self.rounds + 1)) for k in range(1, self.rounds + 1)]
        if len(set(self.boundaries)) < self.rounds or self.boundaries[0] < 1:
            raise ConfigError(f"model.prune_rounds={self.rounds} needs at least {self.rounds + 1} training steps "
                              f"(train.steps={steps})")

    @property
    def state(self) -> dict:
        return self.task.prune_state

    def due(self, step: int) -> bool:
        done = int(self.state.get("done", 0))
        return done < self.rounds and step >= self.boundaries[done]

    def _held_out_inputs(self) -> list:
        task, out = self.task, []
        for i, batch in enumerate(self.val_loader):
            if i >= self.n_batches:
                break
            b = task.to_device(batch)
            out.append(task.eval_inputs(b, task.cfg)[0] if "A" not in b else b["A"])
        if not out:
            raise ConfigError("model.prune_rounds needs held-out samples to check each cut against; the "
                              "validation split is empty (data.val_fraction / data.synthetic.n_val)")
        return out

    def run(self, step: int, log) -> dict:
        """One pruning round now; returns its table row (MACs, params, quality, held-back layers)."""
        task = self.task
        key = task.generator_key
        G = task.nets[key]
        reference = copy.deepcopy(G).eval()  # the net before the cut: what each cut is judged against
        for p in reference.parameters():
            p.requires_grad_(False)
        extras = task.extra_tensors()

        def fwd(net, A):
            return task.translate(net, A, task.cfg, extras)

        done = int(self.state.get("done", 0))
        res = prune_in_rounds(task, reference, self._held_out_inputs(), [], fwd, ratio=self.ratio, rounds=1,
                              round_steps=0, quality=self.quality, importance=self.importance,
                              latency_repeats=0, ratios=self.state.get("ratios"), check_whole=False,
                              log=lambda m: log(f"prune round {done + 1}/{self.rounds}: {m}"))
        task.nets[key].train()
        before, row = res.table[0], dict(res.table[-1])
        row.update(round=done + 1, step=int(step), macs_before=before["macs"], params_before=before["params"])
        self.state["done"] = done + 1
        self.state["ratios"] = {k: float(v) for k, v in res.ratios.items()}
        self.state.setdefault("table", []).append(row)
        return row
