"""CUDA graphs for the 630-frame rollouts.

A rollout is a chain of small kernels (about 300 per frame at the default widths) that the GPU runs
faster than Python can launch them. `GraphedRollout` captures `VAE_Model.rollout_chunk` (16 frames)
once per batch shape and replays it: a few launches per 16 frames instead of thousands.

    step = GraphedRollout(model, amp=True)       # on a CUDA device; see rollout_step()
    pred = model.rollout(first, labels, noise, step=step)

The graph reads its inputs from, and writes its output to, buffers of its own: every call copies the
inputs in, and the caller must copy the output out before the next call (model.rollout does).
The weights are read in place, so an optimizer step (in place, as torch.optim does it) is seen by the
next replay without a new capture. The graph replays the mode it was captured in: eval.
"""
import sys
from types import SimpleNamespace

import torch


def first_line(error):
    return (str(error).splitlines() or [type(error).__name__])[0]


def rollout_step(model, device, amp, enabled=True, compile=False):
    """The fastest rollout step on this device: a GraphedRollout on CUDA, else the eager chunk."""
    if enabled and torch.device(device).type == "cuda":
        return GraphedRollout(model, amp, compile)
    if compile:
        print("note: --compile compiles the CUDA graph's frame step; without one (a CPU, or --no-cuda_graph) "
              "the rollout runs eagerly", file=sys.stderr)
    return None  # model.rollout's default: model.rollout_chunk


class GraphedRollout:
    """compile=True first compiles one frame step with torch.compile (inductor fuses the element-wise
    kernels between convolutions), then captures that: fewer kernels per frame, but a compile that
    takes tens of seconds on a cold cache."""

    def __init__(self, model, amp, compile=False):
        self.model, self.amp = model, amp
        self.next_frame = torch.compile(model.next_frame, dynamic=False) if compile else None
        self.graphs = {}  # (prev shape, labels shape) -> captured graph and its buffers
        self.failed = False

    def autocast(self):
        # the autocast cache of bf16 weight copies must be off while capturing: the graph would keep
        # pointing at copies that are freed once the autocast region ends
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False)

    @torch.no_grad()
    def __call__(self, prev, labels, z, anchor):
        if self.model.training:
            raise RuntimeError("GraphedRollout replays eval mode: call model.eval() first")
        if self.failed:
            return self.eager(prev, labels, z, anchor)
        n, chunk = labels.shape[1], z.shape[0]  # z always holds a full chunk
        if n < chunk:  # the last, short chunk: pad to the captured length, the extra frames are dropped
            labels = torch.cat([labels, labels[:, -1:].expand(-1, chunk - n, *labels.shape[2:])], 1)
        key = (tuple(prev.shape), tuple(labels.shape), self.amp)
        if key not in self.graphs:
            try:
                self.graphs[key] = self.capture(prev, labels, z, anchor)
            except Exception as e:  # a slower rollout beats a lost run: say so once, go on eagerly
                print(f"warning: CUDA graph capture failed ({first_line(e)}); rolling out eagerly "
                      f"(--no-cuda_graph silences this)", file=sys.stderr)
                self.failed = True
                return self.eager(prev, labels, z, anchor)
        g = self.graphs[key]
        g.prev.copy_(prev)
        g.labels.copy_(labels)
        g.z.copy_(z)
        g.anchor.copy_(anchor)
        g.graph.replay()
        return g.out

    def eager(self, prev, labels, z, anchor):
        with self.autocast():
            return self.model.rollout_chunk(prev, labels, z, anchor)  # never the compiled step: it may be what failed

    def capture(self, prev, labels, z, anchor):
        g = SimpleNamespace(prev=prev.float().clone(), labels=labels.clone(), z=z.clone(), anchor=anchor.float().clone(),
                            graph=torch.cuda.CUDAGraph())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), self.autocast():  # warm-up: cuDNN picks its kernels outside the capture
            for _ in range(2):
                self.model.rollout_chunk(g.prev, g.labels, g.z, g.anchor, self.next_frame)
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(g.graph), self.autocast():
            g.out = self.model.rollout_chunk(g.prev, g.labels, g.z, g.anchor, self.next_frame)
        return g


class ClipLoss(torch.nn.Module):
    """model.clip_loss with its flags fixed, tensors in and tensors out: the form make_graphed_callables takes."""

    def __init__(self, model, teacher_forcing, detach_prev, per_frame):
        super().__init__()
        self.model, self.teacher_forcing, self.detach_prev, self.per_frame = model, teacher_forcing, detach_prev, per_frame

    def forward(self, img, label, beta, eps, *reference):
        loss, mse, kl, _ = self.model.clip_loss(img, label, beta, self.teacher_forcing, self.detach_prev, self.per_frame,
                                                eps=eps, reference_frame=reference[0] if reference else None)
        return loss, mse, kl


class GraphedClipLoss:
    """Training's forward and backward of one clip, each replayed as one CUDA graph
    (torch.cuda.make_graphed_callables). A free-running clip is a chain of T-1 decoder steps, thousands
    of small kernels that Python launches slower than the GPU runs them at small batches. The optimizer
    step, clipping and EMA stay eager (a few fused kernels), so the training loop is unchanged.

    One capture per (teacher forcing, shapes, reference or not), on copies of the first batch of that
    kind. The capture's warm-up passes would move BatchNorm's running statistics: they are restored, so
    capturing changes nothing. A failed capture warns once and trains eagerly.

    The parameters' .grad come back as the graph's own gradient buffers, overwritten by the next
    replay: zero the gradients with set_to_none=True before each backward and step after one backward
    (what Trainer does); accumulating gradients over several clips would need a copy."""

    def __init__(self, model, amp, detach_prev, per_frame):
        self.model, self.amp, self.detach_prev, self.per_frame = model, amp, detach_prev, per_frame
        self.graphs, self.failed = {}, False

    def __call__(self, img, label, beta, teacher_forcing, eps, reference=None):
        """(loss, mse, kl) of one clip, as model.clip_loss(..., eps=eps, reference_frame=reference)."""
        if not self.model.training:
            raise RuntimeError("GraphedClipLoss replays train mode: call model.train() first")
        args = (img, label, torch.full((), float(beta), device=img.device), eps) + (() if reference is None else (reference,))
        if not self.failed:
            key = (teacher_forcing, *(tuple(a.shape) for a in args))
            if key not in self.graphs:
                try:
                    self.graphs[key] = self.capture(teacher_forcing, args)
                except Exception as e:  # a slower run beats a lost one: say so once, go on eagerly
                    print(f"warning: CUDA graph capture of the training step failed ({first_line(e)}); "
                          f"training eagerly (drop --cuda_graph_train)", file=sys.stderr)
                    self.failed = True
            if not self.failed:
                return self.graphs[key](*args)
        return ClipLoss(self.model, teacher_forcing, self.detach_prev, self.per_frame)(*args)

    def capture(self, teacher_forcing, args):
        module = ClipLoss(self.model, teacher_forcing, self.detach_prev, self.per_frame)
        saved = [b.clone() for b in self.model.buffers()]
        inputs = tuple(a.clone() for a in args)  # the graph's own input buffers: never the caller's tensors
        try:  # the autocast cache must be off while capturing (see GraphedRollout.autocast)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False):
                return torch.cuda.make_graphed_callables(module, inputs, allow_unused_input=True)  # e.g. an unused prior
        finally:
            with torch.no_grad():
                for buffer, value in zip(self.model.buffers(), saved):
                    buffer.copy_(value)
