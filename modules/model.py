"""VAE_Model: the course's conditional VAE (five networks), its training loss and its rollout."""
import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from .heads import head_class
from .modules import (Decoder_Fusion, Gaussian_Predictor, Generator, Label_Encoder, RGB_Encoder,
                      check_dims, reparameterize)

PRIORS = ("fixed", "learned")


def autocast(device, enabled):
    """bf16 autocast (--amp) on the given device; a no-op context when disabled."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=enabled)


def kl_criterion(mu, logvar, batch_size):
    """KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent, averaged over the batch."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) / batch_size


def kl_gaussians(mu_q, logvar_q, mu_p, logvar_p, batch_size):
    """KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) for diagonal Gaussians, summed over the
    latent, averaged over the batch. Both sides get gradients (SVG-LP trains the prior through it)."""
    return 0.5 * torch.sum(logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) * torch.exp(-logvar_p) - 1) / batch_size


class VAE_Model(nn.Module):
    def __init__(self, F_dim=128, L_dim=32, N_dim=12, D_out_dim=192, output_activation="sigmoid",
                 zero_init_posterior=False, prior="fixed", flow_deadzone=0.0):
        super().__init__()
        check_dims(F_dim, L_dim, N_dim, D_out_dim)
        self.N_dim = N_dim
        self.frame_transformation = RGB_Encoder(3, F_dim)
        self.label_transformation = Label_Encoder(3, L_dim)
        self.Gaussian_Predictor = Gaussian_Predictor(F_dim + L_dim, N_dim)
        head = head_class(output_activation)
        self.Decoder_Fusion = Decoder_Fusion(F_dim + L_dim + N_dim + head.extra_channels(F_dim), D_out_dim)
        self.Generator = Generator(D_out_dim, head.channels, output_activation)
        self.head = head(flow_deadzone)  # after the Generator: the parameter order of existing checkpoints
        self.head.init_last_conv(self.Generator[-1])
        if zero_init_posterior:  # mu = logvar = 0 at start: KL starts at 0 instead of thousands
            nn.init.zeros_(self.Gaussian_Predictor[-1].weight)
            nn.init.zeros_(self.Gaussian_Predictor[-1].bias)
        if prior not in PRIORS:
            raise ValueError(f"--prior must be one of {PRIORS}, got {prior!r}")
        # SVG-LP: p(z_t | x_{t-1}, p_t) from the features the decoder sees. It starts as N(0, I).
        self.Learned_Prior = Gaussian_Predictor(F_dim + L_dim, N_dim) if prior == "learned" else None
        if self.Learned_Prior is not None:
            nn.init.zeros_(self.Learned_Prior[-1].weight)
            nn.init.zeros_(self.Learned_Prior[-1].bias)

    @classmethod
    def from_args(cls, args):
        return cls(args.F_dim, args.L_dim, args.N_dim, args.D_out_dim, args.output_activation,
                   getattr(args, "zero_init_posterior", False), getattr(args, "prior", "fixed"),
                   getattr(args, "flow_deadzone", 0.0))

    def prior(self, prev_feat, label_feat):
        """(mu, logvar) of the learned prior p(z_t | x_{t-1}, p_t), or None for the fixed N(0, I)."""
        return None if self.Learned_Prior is None else self.Learned_Prior.params(prev_feat, label_feat)

    def prior_sample(self, prev_feat, label_feat, eps):
        """z at validation and test: eps ~ N(0, I) itself (fixed prior), or reparameterised by the learned prior."""
        prior = self.prior(prev_feat, label_feat)
        return eps if prior is None else reparameterize(*prior, eps)

    def kl(self, mu, logvar, prior, batch_size):
        if prior is None:
            return kl_criterion(mu, logvar, batch_size)
        return kl_gaussians(mu, logvar, *prior, batch_size)

    def anchor(self, first_frame, first_label):
        """What a chain of steps keeps of its start: x_0 and its pose label p_0 as one [B,6,H,W] tensor
        (so rollouts and graphs carry one tensor)."""
        return torch.cat([first_frame, first_label], 1)

    def reference(self, anchor, first_feat=None):
        """(x_0, its features, p_0) for a head that reads the anchor, else None. first_feat: the features of x_0
        if already computed."""
        if not self.head.reads_anchor:
            return None
        frame = anchor[:, :3]
        feat = self.frame_transformation(frame) if first_feat is None else first_feat
        return frame, feat, anchor[:, 3:6]

    def decode(self, prev_frame, prev_feat, label_feat, z, reference=None, label=None):
        """x̂_t from the previous frame (its pixels matter only to heads that move them) and, for a head that
        reads the anchor, the reference from self.reference() and the pose label p_t itself."""
        step, extra = self.head.read(reference, label)
        return self.head(self.Generator(self.Decoder_Fusion(prev_feat, label_feat, z, *extra)), prev_frame, step)

    # -- training ---------------------------------------------------------------------------

    def forward(self, *args, **kwargs):
        """= clip_loss: DistributedDataParallel syncs gradients only for calls through forward."""
        return self.clip_loss(*args, **kwargs)

    def clip_loss(self, img, label, beta, teacher_forcing, detach_prev=False, per_frame=False, eps=None,
                  reference_frame=None):
        """Loss of one clip: sum over t=1..T-1 of MSE(x̂_t, x_t) + beta * KL_t.

        img, label: [B,T,3,H,W]. Under teacher forcing x̂_t is decoded from the true x_{t-1},
        otherwise from the model's own x̂_{t-1} (x̂_0 = x_0). The posterior always sees the true x_t.
        per_frame=True runs the course's frame-by-frame loop (Label_Encoder's BatchNorm sees B
        samples); False batches everything that does not depend on predictions over time (B*T).
        eps: optional reparameterisation noise [B,T-1,N,H,W]. reference_frame: the anchor (see anchor())
        that a head reads (default: that of img[:, 0], label[:, 0]). Returns (loss, mse, kl, predictions).
        """
        B, T = img.shape[:2]
        if eps is None:
            eps = torch.randn(B, T - 1, self.N_dim, *img.shape[-2:], device=img.device, dtype=img.dtype)
        run = self._frames_one_by_one if per_frame else self._frames_batched_over_time
        preds, mus, logvars, priors = run(img, label, teacher_forcing, detach_prev, eps, reference_frame)
        preds, mus, logvars = preds.float(), mus.float(), logvars.float()  # the loss in fp32, also under --amp
        mse = sum(F.mse_loss(preds[:, t], img[:, t + 1]) for t in range(T - 1))
        prior_at = (lambda t: None) if priors is None else (lambda t: (priors[0][:, t].float(), priors[1][:, t].float()))
        kl = sum(self.kl(mus[:, t], logvars[:, t], prior_at(t), B) for t in range(T - 1))
        return mse + beta * kl, mse, kl, preds

    def _frames_one_by_one(self, img, label, teacher_forcing, detach_prev, eps, reference_frame):
        preds, mus, logvars, priors = [], [], [], []
        anchor = self.anchor(img[:, 0], label[:, 0]) if reference_frame is None else reference_frame
        prev, reference = img[:, 0], self.reference(anchor)
        for t in range(1, img.shape[1]):
            label_feat = self.label_transformation(label[:, t])
            z, mu, logvar = self.Gaussian_Predictor(self.frame_transformation(img[:, t]), label_feat, eps[:, t - 1])
            if teacher_forcing:
                prev = img[:, t - 1]
            prev_feat = self.frame_transformation(prev)
            priors.append(self.prior(prev_feat, label_feat))
            out = self.decode(prev, prev_feat, label_feat, z, reference, label[:, t])
            prev = out.detach() if detach_prev else out
            preds.append(out), mus.append(mu), logvars.append(logvar)
        return torch.stack(preds, 1), torch.stack(mus, 1), torch.stack(logvars, 1), stack_priors(priors)

    def _frames_batched_over_time(self, img, label, teacher_forcing, detach_prev, eps, reference_frame):
        B, T = img.shape[:2]
        flat = lambda x: x.flatten(0, 1)  # noqa: E731  [B,T,...] -> [B*T,...]
        frame_feat = self.frame_transformation(flat(img)).unflatten(0, (B, T))
        anchor = self.anchor(img[:, 0], label[:, 0]) if reference_frame is None else reference_frame
        label_feat = self.label_transformation(flat(label[:, 1:])).unflatten(0, (B, T - 1))
        z, mu, logvar = self.Gaussian_Predictor(flat(frame_feat[:, 1:]), flat(label_feat), flat(eps))
        z, mu, logvar = (x.unflatten(0, (B, T - 1)) for x in (z, mu, logvar))
        first_feat = frame_feat[:, 0] if reference_frame is None else None
        reference = self.reference(anchor, first_feat)
        if teacher_forcing:  # every previous frame is known: one parallel call over time
            prior = self.prior(flat(frame_feat[:, :-1]), flat(label_feat))
            prior = None if prior is None else tuple(p.unflatten(0, (B, T - 1)) for p in prior)
            if reference is not None:  # the same x_0 at every step of the clip
                reference = tuple(flat(r[:, None].expand(-1, T - 1, *r.shape[1:])) for r in reference)
            preds = self.decode(flat(img[:, :-1]), flat(frame_feat[:, :-1]), flat(label_feat), flat(z), reference,
                                flat(label[:, 1:]))
            return preds.unflatten(0, (B, T - 1)), mu, logvar, prior
        preds, priors, prev, prev_feat = [], [], img[:, 0], frame_feat[:, 0]
        for t in range(T - 1):
            priors.append(self.prior(prev_feat, label_feat[:, t]))
            out = self.decode(prev, prev_feat, label_feat[:, t], z[:, t], reference, label[:, t + 1])
            preds.append(out)
            if t < T - 2:
                prev = out.detach() if detach_prev else out
                prev_feat = self.frame_transformation(prev)
        return torch.stack(preds, 1), mu, logvar, stack_priors(priors)

    # -- rollout ----------------------------------------------------------------------------

    @torch.no_grad()
    def rollout(self, first_frame, labels, noise, progress=None, step=None, on_chunk=None):
        """Autoregressive prediction from one frame: first_frame [B,3,H,W], labels [B,T,3,H,W]
        (label t is the pose of frame t), noise: a NoiseSource. Returns [B,T,3,H,W] in fp32, frame 0 =
        input. Frames go in chunks of noise.chunk through `step` (default rollout_chunk; a captured
        CUDA graph of it on a GPU), which may reuse its output buffer: each chunk is copied out at once.
        on_chunk(start, frames [B,n,3,H,W]) sees each chunk as soon as it is queued (the Tester writes
        its files from it while the GPU computes the next chunks)."""
        step = step or self.rollout_chunk
        B, T = labels.shape[:2]
        out = torch.empty(B, T, *first_frame.shape[1:], device=first_frame.device)
        out[:, 0] = first_frame
        prev, anchor = first_frame, self.anchor(first_frame, labels[:, 0])
        for start in range(1, T, noise.chunk):
            n = min(noise.chunk, T - start)
            frames = step(prev, labels[:, start:start + n], noise.next_chunk(), anchor)  # z of a full chunk
            out[:, start:start + n] = frames[:, :n]
            prev = frames[:, n - 1].clone()  # the step may overwrite its output buffer next call
            if on_chunk is not None:
                on_chunk(start, out[:, start:start + n])
            if progress is not None:
                progress.update(B * n)
        return out

    def rollout_samples(self, first_frame, labels, seed, samples=1, progress=None, step=None, on_chunk=None):
        """`samples` rollouts of every sequence in one batch: [S, K, T, 3, H, W]. Sample k of sequence s
        draws from the generator of (seed, s, k), so it equals a rollout of that sample alone."""
        S, K = len(first_frame), samples
        noise = NoiseSource([(seed, s, k) for s in range(S) for k in range(K)], (self.N_dim, *first_frame.shape[-2:]),
                            first_frame.device)
        pred = self.rollout(first_frame.repeat_interleave(K, 0), labels.repeat_interleave(K, 0), noise, progress, step,
                            on_chunk)
        return pred.unflatten(0, (S, K))  # row s*K + k: sequence s, sample k

    def rollout_chunk(self, prev, labels, z, anchor, next_frame=None):
        """n frames after prev [B,3,H,W], given their poses labels [B,n,3,H,W], noise z [>=n,B,N,H,W]
        and the rollout's anchor (see anchor(); read by a head that reads it). The pose features of the chunk come from
        one batched call; the frames from a sequential chain of next_frame (default self.next_frame;
        cuda_graphs may pass a compiled one)."""
        next_frame = next_frame or self.next_frame
        label_feat = self.label_transformation(labels.flatten(0, 1)).unflatten(0, labels.shape[:2])
        reference = self.reference(anchor)
        frames = []
        for k in range(labels.shape[1]):
            prev = next_frame(prev, label_feat[:, k], z[k], reference, labels[:, k])
            frames.append(prev)
        return torch.stack(frames, 1)

    def next_frame(self, prev, label_feat, eps, reference=None, label=None):
        """One rollout step: x̂_t (fp32) from x̂_{t-1}, the features of p_t (and p_t itself)
        and the noise of step t."""
        prev_feat = self.frame_transformation(prev)
        z = self.prior_sample(prev_feat, label_feat, eps)
        return self.decode(prev, prev_feat, label_feat, z, reference, label).float()


def stack_priors(priors):
    """A list over time of (mu, logvar) or None -> (mu [B,T,...], logvar [B,T,...]) or None."""
    if priors[0] is None:
        return None
    return torch.stack([p[0] for p in priors], 1), torch.stack([p[1] for p in priors], 1)


def stream_seed(*parts):
    """A 63-bit seed from any tuple (seed, sequence, sample, ...), stable across runs and machines."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class NoiseSource:
    """z ~ N(0, I) for a batch whose row b has its own generator seeded by keys[b]. Each row draws
    fixed-size chunks of steps from its own stream, so a row gets the same noise whether it is
    rolled out alone or inside any batch."""

    def __init__(self, keys, shape, device, chunk=16):
        self.shape, self.device, self.chunk = tuple(shape), torch.device(device), chunk
        self.generators = [torch.Generator(device=self.device).manual_seed(stream_seed(*k)) for k in keys]
        self.buffer, self.pos = None, chunk

    def next_chunk(self):
        """The next `chunk` steps at once: [chunk, B, *shape]. Only at a chunk boundary."""
        if self.pos != self.chunk and self.buffer is not None:
            raise RuntimeError(f"NoiseSource.next_chunk() in the middle of a chunk (step {self.pos} of {self.chunk})")
        self.next()
        self.pos = self.chunk
        return self.buffer

    def next(self):
        if self.pos == self.chunk:
            self.buffer = torch.stack([torch.randn(self.chunk, *self.shape, generator=g, device=self.device)
                                       for g in self.generators], 1)
            self.pos = 0
        self.pos += 1
        return self.buffer[self.pos - 1]


def rollout_noise(model, seed, sequence_ids, sample, frame_H, frame_W, device):
    return NoiseSource([(seed, s, sample) for s in sequence_ids], (model.N_dim, frame_H, frame_W), device)
