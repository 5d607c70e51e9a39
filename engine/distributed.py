"""Multi-GPU and multi-node training under torchrun (DistributedDataParallel), and no-ops without it.

    torchrun --nproc_per_node=4 Trainer.py ...                         # one machine, 4 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 Trainer.py ...

Every rank sees the same clip permutation, teacher-forcing draws and reparameterisation noise (all
derived from the seed), takes its own slice of each global batch, and DDP averages the gradients: N
ranks of batch b step like one process of batch N*b (exactly so with SyncBatchNorm, i.e. on CUDA).
"""
import os
from datetime import timedelta

import torch
import torch.distributed as dist


class Context:
    """rank, world size and device of this process; world 1 without torchrun."""

    def __init__(self, rank=0, world=1, device="cpu"):
        self.rank, self.world, self.device = rank, world, torch.device(device)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def active(self):
        return self.world > 1

    def run_on_main(self, fn, *args, **kwargs):
        """fn on rank 0 alone, the others waiting. Every rank learns whether it raised, so that none
        waits forever in a later collective: rank 0 re-raises, the others exit with a message."""
        result, error = None, None
        if self.is_main:
            try:
                result = fn(*args, **kwargs)
            except BaseException as e:  # noqa: B036  (re-raised below, after the others are told)
                error = e
        if self.from_main(error is not None):
            if error is not None:
                raise error
            raise SystemExit(f"rank {self.rank}: stopping because rank 0 failed (its error is in its log)")
        return result

    def all_mean(self, values):
        """The mean over ranks of a list of floats (for logging)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def from_main(self, flag):
        """Rank 0's value of a boolean decision, so that every rank takes the same branch."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.comm_device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def any(self, flag):
        """True on every rank when it is true on any (a stop request that reached one rank)."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def check_in_sync(self, model):
        """Raise if the ranks' parameters differ (they must be identical after every step)."""
        if not self.active:
            return
        with torch.no_grad():
            local = torch.stack([p.double().sum() for p in model.parameters()]).to(self.comm_device)
        gathered = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(gathered, local)
        if not all(torch.equal(gathered[0], g) for g in gathered[1:]):
            raise RuntimeError("the ranks' parameters differ: distributed training diverged")

    @property
    def comm_device(self):
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def use_device(device):
    """Make cuda:N the current device: CUDA graphs, streams and events follow the current device."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)


def setup(device):
    """Join the process group when torchrun started this process (WORLD_SIZE > 1): nccl on CUDA (one
    GPU per local rank), gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        use_device(device)
        return Context(0, 1, device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    return Context(rank, world, device)


def wrap(model, ctx, sync_bn):
    """(plain module, module to train through): DDP around the model under torchrun. Checkpoints save
    the plain module, so they have no 'module.' prefix and load in any number of processes.
    SyncBatchNorm needs CUDA: on CPU (gloo) each rank normalises over its own batch."""
    if not ctx.active:
        return model, model
    if sync_bn and ctx.device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ctx.device] if ctx.device.type == "cuda" else None
    return model, torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def teardown(ctx, finished=False):
    """finished: every rank completed the run, so they can meet once more. Without that barrier a rank
    that leaves first can tear gloo down under a peer still talking to it (seen as a rare SIGABRT,
    "terminate called without an active exception"). After a failure there is no barrier: it could hang."""
    if ctx.active and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
