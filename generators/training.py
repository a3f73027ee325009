"""Training a bank: every network on patches cut by the same machinery as `distort`.

Each network trains alone, in name order, for the same budget: ``steps`` batches, or
``epochs`` passes in which every source image gives one patch per pass (the paper: one
epoch of ImageNet's 1.3M images on GPUs; the default here, 200 steps of 16 64x64 patches,
trains a CPU bank of a few networks in minutes and is a sketch of that, not a match).

Loss (the config's weights): ``l1_weight * |G(x) - y|_1 + vgg_weight * VGG(G(x), y)
+ adversarial_weight * LSGAN(D(x, G(x)))``, Adam (beta1 0.5, as pix2pix) at the config's
learning rate for G and D.

Determinism by construction: the weights start from ``torch.manual_seed(config.seed)``;
the patch in slot j of step s is drawn from ``SeedSequence([config.seed, 2, s, j])``
(epochs: the order of sources from ``[seed, 3, epoch]``, the patch from ``[seed, 4, epoch,
source]``), so a batch never depends on what was drawn before it.

Resume, network by network: ``NAME.status.json`` (written atomically) says pending,
training (with steps done), done or failed (with the reason). A run skips done networks
and failed ones (``retry_failed`` trains those again from scratch). A network
interrupted while training continues from its last periodic state ``NAME.resume.pt``
(every ``checkpoint_every`` steps: weights, both optimizers, the torch RNG and the step):
the data of step s is a function of s alone, so on the same machine and device the result
equals that of an uninterrupted run. If the training settings changed since that state
was saved, the network restarts from step 0.

Divergence: a loss that is NaN or infinite marks that network failed with the reason; the
others go on. Any other error inside a network's training is a bug: it stops the run and
shows itself, and the network, neither done nor failed, is resumed by the next run.

On CUDA the networks run in mixed precision (bfloat16 where supported, else float16 with a
gradient scaler) and channels_last.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from bapps_build.errors import ConfigError
from bapps_build.files import atomic_path
from distortions import generator

from ._torch import require_torch, resolve_device
from .bank import Bank, CHECKPOINT_FORMAT, load_checkpoint_file, save_generator_checkpoint
from .corruptions import apply_corruption, training_corruption

torch = require_torch()
F = torch.nn.functional


@dataclass(frozen=True)
class TrainSettings:
    steps: Optional[int] = 200  # ignored when epochs is given
    epochs: Optional[float] = None
    batch_size: int = 16
    patch_size: int = 64
    sources: Tuple[str, ...] = ()  # --sources specs; empty: the built-in photos
    val_fraction: float = 0.2  # training draws from the train split only
    scale_range: Tuple[float, float] = (0.5, 1.0)
    device: str = "auto"
    checkpoint_every: int = 50
    no_vgg: bool = False
    vgg_weights: Optional[str] = None
    retry_failed: bool = False

    def __post_init__(self):
        if self.epochs is None and (self.steps is None or self.steps < 1):
            raise ConfigError("give --steps N (N >= 1) or --epochs E")
        if self.epochs is not None and not self.epochs > 0:
            raise ConfigError(f"--epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 16 <= self.patch_size <= 1024:
            raise ConfigError(f"--patch-size must be in 16..1024, got {self.patch_size}")
        if self.checkpoint_every < 1:
            raise ConfigError("--checkpoint-every must be at least 1")


class Diverged(RuntimeError):
    pass


# ------------------------------------------------------------------ patches


class TrainingPatches:
    """Patches from the train split of the sources, cut as `distort` cuts them."""

    def __init__(self, settings: TrainSettings):
        from bapps_build.patch_spec import PatchSpec
        from bapps_build.split import load_split

        self.spec = PatchSpec(patch_size=settings.patch_size, scale_range=tuple(settings.scale_range))
        self.split = load_split(tuple(settings.sources), "train", self.spec,
                                val_fraction=settings.val_fraction).require()
        self.sources = self.split.sources
        self.digest = hashlib.sha256("".join(s.sha256 for s in self.sources).encode()).hexdigest()
        self.settings = settings

    def steps_total(self) -> int:
        s = self.settings
        if s.epochs is not None:
            return max(1, math.ceil(s.epochs * self.steps_per_epoch()))
        return int(s.steps)

    def steps_per_epoch(self) -> int:
        return -(-len(self.sources) // self.settings.batch_size)

    def _slot(self, seed: int, step: int, j: int):
        """(rng, candidate sources) of slot j of a step; None past the end of an epoch."""
        b = self.settings.batch_size
        if self.settings.epochs is None:
            return generator(np.random.SeedSequence([seed, 2, step, j])), self.sources
        epoch, k = divmod(step, self.steps_per_epoch())
        order = generator(np.random.SeedSequence([seed, 3, epoch])).permutation(len(self.sources))
        pos = k * b + j
        if pos >= len(order):
            return None
        idx = int(order[pos])
        return generator(np.random.SeedSequence([seed, 4, epoch, idx])), [self.sources[idx]]

    def batch(self, config, step: int) -> Tuple[np.ndarray, np.ndarray]:
        """(corrupted inputs, clean targets) of a step, float32 N x H x W x 3 in [0, 1]."""
        inputs, targets = [], []
        for j in range(self.settings.batch_size):
            slot = self._slot(int(config["seed"]), step, j)
            if slot is None:
                break
            rng, sources = slot
            patch = self.split.patch(rng, self.spec, among=sources)
            clean = patch.astype(np.float32) / np.float32(255.0)
            targets.append(clean)
            inputs.append(apply_corruption(clean, training_corruption(config["corruption"], rng)))
        return np.stack(inputs), np.stack(targets)


def to_tensor(images: np.ndarray, device: str, channels_last: bool = False):
    t = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
    return t.contiguous(memory_format=torch.channels_last) if channels_last else t


# ------------------------------------------------------------------ one network


def settings_digest(settings: TrainSettings, patches: TrainingPatches, device: str, use_vgg: bool) -> str:
    """What decides a network's training result; a resume state from other settings is not reused."""
    key = {"steps": patches.steps_total(), "epochs": settings.epochs, "batch_size": settings.batch_size,
           "patch_size": settings.patch_size, "scale_range": list(settings.scale_range),
           "sources": patches.digest, "device": device.split(":")[0], "vgg": use_vgg}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _finite(*values) -> bool:
    return all(math.isfinite(float(v.detach() if hasattr(v, "detach") else v)) for v in values)


@dataclass(frozen=True)
class LossPlan:
    """The loss one network trains with: its config's weights, less the VGG term under --no-vgg."""

    weights: dict
    use_vgg: bool
    vgg_term: str  # for the status: used, dropped (--no-vgg) or not used (weight 0)


def loss_plan(name: str, config: dict, settings: TrainSettings, vgg=None) -> LossPlan:
    weights = dict(config["loss"])
    vgg_needed = weights["vgg_weight"] > 0
    use_vgg = vgg_needed and not settings.no_vgg
    if use_vgg and vgg is None:
        raise RuntimeError(f"{name} needs the VGG features (vgg_weight {weights['vgg_weight']:.3g})")
    if not use_vgg:
        weights["vgg_weight"] = 0.0
    vgg_term = ("used" if use_vgg else "dropped (--no-vgg): trained without it" if vgg_needed
                else "not used (weight 0)")
    return LossPlan(weights, use_vgg, vgg_term)


class NetworkTrainer:
    """One network's generator and discriminator, their optimizers and mixed precision, and the
    two optimizer steps of a batch. On CUDA: channels_last, bfloat16 where supported, else
    float16 with a gradient scaler; on the CPU: float32."""

    def __init__(self, config: dict, plan: LossPlan, device: str, vgg=None):
        from .discriminator import build_discriminator
        from .networks import build_generator

        self.plan, self.device, self.vgg = plan, device, vgg
        self.cuda = device.startswith("cuda")
        torch.manual_seed(int(config["seed"]))  # the initial weights
        self.gen = build_generator(config).to(device)
        disc = build_discriminator(config)  # built even when unused: it draws from the seeded RNG
        disc = disc.to(device) if disc is not None else None
        self.disc = None if plan.weights["adversarial_weight"] == 0 else disc
        if self.cuda:
            self.gen = self.gen.to(memory_format=torch.channels_last)
            if self.disc is not None:
                self.disc = self.disc.to(memory_format=torch.channels_last)
        lr = float(plan.weights["learning_rate"])
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=lr, betas=(0.5, 0.999))
        self.opt_d = (torch.optim.Adam(self.disc.parameters(), lr=lr, betas=(0.5, 0.999))
                      if self.disc is not None else None)
        self.amp_dtype = ((torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
                          if self.cuda else None)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and self.amp_dtype == torch.float16)

    def autocast(self):
        return torch.autocast("cuda", dtype=self.amp_dtype) if self.cuda else torch.autocast("cpu", enabled=False)

    def train_mode(self) -> None:
        self.gen.train()
        if self.disc is not None:
            self.disc.train()

    def step(self, x_np: np.ndarray, y_np: np.ndarray, step: int) -> float:
        """One batch: the discriminator's step, then the generator's; returns the batch's L1."""
        x, y = to_tensor(x_np, self.device, self.cuda), to_tensor(y_np, self.device, self.cuda)
        with self.autocast():
            out = self.gen(x)
        out = out.float()
        if self.disc is not None:
            self._discriminator_step(x, y, out, step)
        loss, l1 = self._generator_loss(x, y, out, step)
        self.opt_g.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        return float(l1.detach())

    def _discriminator_step(self, x, y, out, step: int) -> None:
        """LSGAN: real pairs towards 1, generated ones (not back-propagated into G) towards 0."""
        with self.autocast():
            real, fake = self.disc(x, y).float(), self.disc(x, out.detach()).float()
        d_loss = 0.5 * (F.mse_loss(real, torch.ones_like(real)) + F.mse_loss(fake, torch.zeros_like(fake)))
        if not _finite(d_loss):
            raise Diverged(f"the discriminator loss became {float(d_loss.detach())} at step {step}")
        self.opt_d.zero_grad(set_to_none=True)
        self.scaler.scale(d_loss).backward()
        self.scaler.step(self.opt_d)

    def _generator_loss(self, x, y, out, step: int):
        """(the weighted loss of G, its L1 term); Diverged when the loss is not finite."""
        weights = self.plan.weights
        l1 = F.l1_loss(out, y)
        loss = weights["l1_weight"] * l1
        vgg_loss = adv = torch.zeros((), device=self.device)
        if self.plan.use_vgg:
            from .vgg import perceptual_loss

            with self.autocast():
                vgg_loss = perceptual_loss(self.vgg, out, y).float()
            loss = loss + weights["vgg_weight"] * vgg_loss
        if self.disc is not None:
            self.disc.requires_grad_(False)  # G's step must not move D
            with self.autocast():
                score = self.disc(x, out).float()
            self.disc.requires_grad_(True)
            adv = F.mse_loss(score, torch.ones_like(score))
            loss = loss + weights["adversarial_weight"] * adv
        if not _finite(loss):
            raise Diverged(f"the loss became {float(loss.detach())} at step {step} (l1 {float(l1.detach()):.4g}, "
                           f"vgg {float(vgg_loss.detach()):.4g}, adversarial {float(adv.detach()):.4g})")
        return loss, l1

    def state(self) -> dict:
        """Weights, optimizers and RNGs: what a resumed run needs to continue bit for bit."""
        state = {"generator": _cpu_state(self.gen), "opt_g": self.opt_g.state_dict(),
                 "torch_rng": torch.get_rng_state()}
        if self.disc is not None:
            state.update(discriminator=_cpu_state(self.disc), opt_d=self.opt_d.state_dict())
        if self.cuda:
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def load_state(self, state: dict) -> None:
        self.gen.load_state_dict(state["generator"])
        if self.disc is not None:
            self.disc.load_state_dict(state["discriminator"])
            self.opt_d.load_state_dict(state["opt_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        torch.set_rng_state(state["torch_rng"])
        if self.cuda and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"])

    def final_generator(self):
        """The trained generator on the CPU, in eval mode; Diverged if a weight is not finite."""
        bad = [k for k, v in self.gen.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise Diverged(f"non-finite weights after training ({', '.join(bad[:3])})")
        self.gen.eval()
        return self.gen.to("cpu").to(memory_format=torch.contiguous_format)


def save_resume_state(path, trainer: NetworkTrainer, step: int, digest: str, history: Sequence[float]) -> None:
    state = {"format": CHECKPOINT_FORMAT + "+resume", "step": step, "settings_digest": digest,
             **trainer.state(), "l1_history": list(history)}
    with atomic_path(path, pid_in_name=False) as tmp:  # fixed temp name: torch.save's bytes depend on it
        torch.save(state, tmp)


def load_resume_state(path, trainer: NetworkTrainer, digest: str) -> Optional[Tuple[int, list]]:
    """(step, L1 history) of the saved state, loaded into the trainer; None when there is none,
    or when it was saved under other training settings (the network then starts again)."""
    if not path.exists():
        return None
    state = load_checkpoint_file(path)
    if state.get("settings_digest") != digest:
        return None
    trainer.load_state(state)
    return int(state["step"]), [float(v) for v in state["l1_history"]]


def train_network(bank: Bank, name: str, settings: TrainSettings, patches: TrainingPatches, device: str,
                  vgg=None, progress: bool = False, on_step: Optional[Callable[[int], None]] = None,
                  log: Callable[[str], None] = print) -> dict:
    """Train one network to the end (resuming its periodic state); returns its final status.

    Raises Diverged on a non-finite loss (the caller marks the network failed); any other
    exception leaves the network in state training, resumable from its last saved state.
    """
    config = bank.config(name)
    plan = loss_plan(name, config, settings, vgg)
    total = patches.steps_total()
    digest = settings_digest(settings, patches, device, plan.use_vgg)
    trainer = NetworkTrainer(config, plan, device, vgg)
    start, history = 0, []
    resume_file = bank.resume_path(name)
    resumed = load_resume_state(resume_file, trainer, digest)
    if resumed is not None:
        start, history = resumed
        log(f"{name}: resuming at step {start} of {total}")
    elif resume_file.exists():
        log(f"{name}: the training settings changed since its last saved state; starting it again")
    started = time.time()
    status = {"name": name, "state": "training", "steps_done": start, "steps_total": total, "device": device,
              "vgg_term": plan.vgg_term, "effective_loss": plan.weights, "settings_digest": digest}
    bank.write_status(name, status)
    _train_steps(bank, name, trainer, patches, config, settings, status, history, progress, on_step)
    sha = save_generator_checkpoint(bank.checkpoint_path(name), trainer.final_generator(), config)
    resume_file.unlink(missing_ok=True)
    window = max(1, min(10, len(history) // 4))
    status.update(state="done", steps_done=total, checkpoint=bank.checkpoint_path(name).name, checkpoint_sha256=sha,
                  seconds=round(time.time() - started, 2),
                  l1_first=round(float(np.mean(history[:window])), 6) if history else None,
                  l1_last=round(float(np.mean(history[-window:])), 6) if history else None)
    bank.write_status(name, status)
    return status


def _train_steps(bank: Bank, name: str, trainer: NetworkTrainer, patches: TrainingPatches, config: dict,
                 settings: TrainSettings, status: dict, history: list, progress: bool,
                 on_step: Optional[Callable[[int], None]]) -> None:
    """The steps from status["steps_done"] to the end, saving a resume state every checkpoint_every."""
    from tqdm import tqdm

    start, total = status["steps_done"], status["steps_total"]
    bar = tqdm(total=total, initial=start, desc=name, unit="step", leave=False, disable=not progress,
               file=sys.stderr, dynamic_ncols=True, position=1)
    trainer.train_mode()
    try:
        for step in range(start, total):
            x, y = patches.batch(config, step)
            history.append(trainer.step(x, y, step))
            done = step + 1
            if done % settings.checkpoint_every == 0 and done < total:
                save_resume_state(bank.resume_path(name), trainer, done, status["settings_digest"], history)
                bank.write_status(name, {**status, "steps_done": done})
            bar.update(1)
            if on_step is not None:
                on_step(done)
    finally:
        bar.close()


def _cpu_state(module) -> dict:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------ the bank


@dataclass(frozen=True)
class TrainJob:
    """What a worker needs to train any network of a bank (one network = one unit of work)."""

    bank_path: str
    settings: TrainSettings
    device: str
    names: Tuple[str, ...]  # the networks to train; unit i trains names[i]
    use_vgg: bool
    bars: bool  # a progress bar per network (one process only)
    # in one process only (they are not sent to workers): messages and a per-step callback
    log: Optional[Callable[[str], None]] = None
    on_step: Optional[Callable[[str, int], None]] = None


_WORKER_STATE = {}  # per process: the training patches and VGG features of a job, loaded once


def _worker_state(job: TrainJob):
    key = (job.bank_path, job.settings, job.device)
    if key not in _WORKER_STATE:
        _WORKER_STATE.clear()
        vgg = None
        if job.use_vgg:
            from .vgg import load_vgg16_features

            vgg = load_vgg16_features(job.settings.vgg_weights).to(job.device)
            if job.device.startswith("cuda"):
                vgg = vgg.to(memory_format=torch.channels_last)
        _WORKER_STATE[key] = (TrainingPatches(job.settings), vgg)
    return _WORKER_STATE[key]


def train_unit(job: TrainJob, i: int, progress: Callable[[int], None] = lambda n: None) -> dict:
    """Train network names[i] (a unit for any executor). Divergence is recorded: the network is
    marked failed and the others go on. Any other exception is a bug and propagates: the
    network stays in state training and the next run resumes it.

    On the CPU each network trains on one thread, whatever the executor and the number of
    workers: the same bank then gives the same weights, bit for bit, trained by one process
    or by many (parallelism comes from training several networks at once). The caller's
    thread count comes back afterwards (with one worker, the unit runs in the caller's process).
    """
    threads = torch.get_num_threads()
    if not job.device.startswith("cuda"):
        torch.set_num_threads(1)
    try:
        return _train_one(job, job.names[i], progress)
    finally:
        torch.set_num_threads(threads)


def _train_one(job: TrainJob, name: str, progress: Callable[[int], None]) -> dict:
    bank = Bank(job.bank_path)
    patches, vgg = _worker_state(job)
    if job.settings.retry_failed and bank.status(name).get("state") == "failed":
        bank.resume_path(name).unlink(missing_ok=True)
    log = job.log or (lambda m: print(m, file=sys.stderr))

    def step_done(step):
        progress(1)
        if job.on_step is not None:
            job.on_step(name, step)

    try:
        train_network(bank, name, job.settings, patches, job.device, vgg=vgg, progress=job.bars, log=log,
                      on_step=step_done)
    except Diverged as exc:
        reason = str(exc)
        previous = bank.status(name)
        bank.write_status(name, {"name": name, "state": "failed", "reason": reason[:2000],
                                 "steps_done": previous.get("steps_done", 0), "device": job.device})
        bank.resume_path(name).unlink(missing_ok=True)
        log(f"{name}: failed: {reason}")
        return {"name": name, "state": "failed", "reason": reason}
    return {"name": name, "state": "done"}


def _network_name(names: Tuple[str, ...], i: int) -> str:
    """Which network a unit trains, for the message of a unit that raised."""
    return f"network {names[i]}"


def networks_to_train(bank: Bank, names: Sequence[str], retry_failed: bool) -> Tuple[list, dict]:
    """(the networks to train, {network skipped: why}): done ones are skipped, and failed ones
    unless retry_failed; pending and interrupted (training) ones are trained."""
    todo, skipped = [], {}
    for n in names:
        state = bank.status(n).get("state")
        if state == "done" and bank.checkpoint_path(n).exists():
            skipped[n] = "done"
        elif state == "failed" and not retry_failed:
            skipped[n] = "failed earlier (--retry-failed trains it again)"
        else:
            todo.append(n)
    return todo, skipped


def _check_vgg(bank: Bank, todo: Sequence[str], settings: TrainSettings) -> bool:
    """Whether the VGG features are needed; VGGWeightsMissing before any training when they are
    needed and missing."""
    from .vgg import VGGWeightsMissing, missing_message, vgg_available

    need_vgg = [n for n in todo if bank.config(n)["loss"]["vgg_weight"] > 0]
    if need_vgg and not settings.no_vgg and not vgg_available(settings.vgg_weights):
        if settings.vgg_weights:
            raise VGGWeightsMissing(f"--vgg-weights {settings.vgg_weights}: no such file")
        listed = ", ".join(need_vgg[:5]) + (" ..." if len(need_vgg) > 5 else "")
        raise VGGWeightsMissing(missing_message(f"{len(need_vgg)} network(s) of {bank.path} ({listed}) have "
                                                "vgg_weight > 0: training them"))
    return bool(need_vgg and not settings.no_vgg)


def train_bank(bank_path, settings: TrainSettings, *, progress: bool = True, log: Callable[[str], None] = print,
               only: Optional[Sequence[str]] = None, workers: Optional[int] = 1, executor: str = "local",
               scheduler: Optional[str] = None, on_step: Optional[Callable[[str, int], None]] = None) -> dict:
    """Train every network of the bank that is not done yet; returns a summary.

    Stops before any training when a network needs the VGG loss and its checkpoint is
    missing (unless settings.no_vgg). only: restrict to these network names. workers:
    networks trained at once (None: every core on the CPU, 1 on a GPU); executor "dask"
    trains them on dask.distributed (--scheduler, or a LocalCluster). log and on_step(name,
    step) are called in this process, so they go with one local worker only.
    """
    from bapps_build.executors import default_workers

    bank = Bank(bank_path)
    names = list(only) if only else list(bank.names)
    for n in names:
        bank.config(n)
    todo, skipped = networks_to_train(bank, names, settings.retry_failed)
    device = resolve_device(settings.device)
    use_vgg = _check_vgg(bank, todo, settings)
    summary = {"bank": str(bank.path), "trained": [], "failed": {}, "skipped": skipped, "device": device,
               "steps_per_network": None}
    if not todo:
        return summary
    summary["steps_per_network"] = TrainingPatches(settings).steps_total()  # also checks the sources first
    if workers is None:
        workers = 1 if device.startswith("cuda") else default_workers()
    workers = max(1, min(workers, len(todo)))
    one_process = workers == 1 and executor == "local"
    if on_step is not None and not one_process:
        raise ValueError("on_step is called in this process: use it with workers=1 and the local executor")
    job = TrainJob(str(bank.path), settings, device, tuple(todo), use_vgg, bars=progress and one_process,
                   log=log if one_process else None, on_step=on_step if one_process else None)
    _run_training(job, summary, workers=workers, executor=executor, scheduler=scheduler, progress=progress)
    summary["trained"].sort()
    return summary


def _run_training(job: TrainJob, summary: dict, *, workers: int, executor: str, scheduler: Optional[str],
                  progress: bool) -> None:
    """Every network of the job as one unit of work; results go into the summary as they come.
    A unit that raised (a bug, not a divergence) stops the run with a WorkError naming it."""
    import functools

    from tqdm import tqdm

    from bapps_build.executors import run_units

    overall = tqdm(total=len(job.names) * summary["steps_per_network"], desc=f"{len(job.names)} network(s)",
                   unit="step", disable=not progress, file=sys.stderr, dynamic_ncols=True, position=0)

    def finished(result):
        if result["state"] == "done":
            summary["trained"].append(result["name"])
        else:
            summary["failed"][result["name"]] = result["reason"]

    try:
        run_units(train_unit, job, range(len(job.names)), workers=workers, on_result=finished,
                  on_progress=lambda n: overall.update(min(n, overall.total - overall.n)),
                  executor=executor, scheduler=scheduler,
                  unit_name=functools.partial(_network_name, job.names))
    finally:
        overall.close()


__all__ = ["TrainSettings", "TrainingPatches", "TrainJob", "train_bank", "train_unit", "train_network", "Diverged"]
