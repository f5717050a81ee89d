"""Meta-train a Generally Learning Agent by supervised learning on PPO learning histories (thesis Alg. 10).

    python train.py --scale smoke --seed 0 --out OUTDIR [--device cpu|cuda] [--set FIELD=VALUE ...]

1. Histories (Alg. 10 line 2): PPO runs on each meta-training environment; every transition
   is kept with the Gaussian action distribution of the PPO policy that took it. Generated
   here, in the training step, every time (nothing is cached outside OUTDIR).
2. Sequences (lines 5-6, Eq. 6.1 with several gaps): n_segments segments of segment_len
   consecutive steps of one PPO lane, taken from iterations k0, k0+g, k0+2g, ...: each
   segment comes from a policy that PPO improved g more times than the one before it.
   Every sequence gets fresh random projections W_s, W_a of observations and actions.
3. Objective (line 7, Eq. 6.1): at every step i the Transformer's action distribution is
   fitted to the PPO policy's p(a_i) by the sum of forward and reverse KL, so the agent learns
   to act like a later, better policy from the context of the earlier experience.

Writes OUTDIR/checkpoint.pt (model kwargs, weights, Args, meta-training env ids) and
OUTDIR/train_log.json (losses and the PPO learning curves of the histories).
"""

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gla import GLA, random_projections, sequence_tokens
from ppo import Adam, PPOConfig, run_ppo


@dataclass
class Args:
    # --- sizes: set by the scale presets below ---
    train_envs: list = field(default_factory=lambda: [
        "CartPole-v1", "Acrobot-v1", "MountainCarContinuous-v0",
        "PointGoal0-v0", "PointGoal2-v0", "PointGoal4-v0", "PointGoal6-v0"])  # not PointGoal3D/4D (held out)
    ppo_runs: int = 2  # PPO runs (seeds) per meta-training environment
    ppo_steps: int = 16384  # environment steps per PPO run
    ppo_envs: int = 8  # PPO lanes; each lane's rollout is one candidate segment
    ppo_rollout: int = 64  # PPO steps per lane per iteration (>= segment_len)
    n_segments: int = 8  # segments per sequence; context length = n_segments * segment_len
    segment_len: int = 64  # consecutive steps per segment
    steps: int = 800  # gradient steps on the GLA
    batch_size: int = 16  # sequences per gradient step
    max_seconds: float = 1e9  # wall clock of the whole step (histories included): stop training early past it
    d_model: int = 64  # Transformer width
    n_layer: int = 2  # Transformer blocks
    n_head: int = 4  # attention heads
    proj: str = "gaussian"  # projection family: gaussian (dense, thesis) or signperm (signed permutations)
    log_every: int = 100
    # --- hyperparameters (the offline proposer mutates these defaults; presets never touch them) ---
    lr: float = 2e-3  # Adam step size on the Transformer (cosine-decayed to 0)
    weight_decay: float = 0.0  # AdamW weight decay
    grad_clip: float = 1.0  # clip the gradient to this global norm (0 = off)
    gap: int = 4  # g: PPO iterations between consecutive segments (larger: learn faster in context)
    obs_proj: int = 64  # observations are projected to this many dimensions (thesis: 64)
    act_proj: int = 16  # actions are projected to this many dimensions (thesis: 16)
    loss_first_segment: bool = True  # also fit the first segment's actions (the agent acts there too)
    start_frac: float = 1.0  # first segment drawn from the first start_frac of possible PPO iterations
    ppo_lr: float = 3e-4  # step size of the PPO runs that generate the histories
    pos_emb: bool = False  # eta_i = location in the lifetime (a learned position embedding); False: no eta_i
    rew_norm: str = "std"  # in-context reward normalisation: std (standardised) or rms (r / running RMS)


SCALES = {
    # test: a context of 64 steps, so the meta-test (64 steps, 25-step episodes) has distinct early
    # and late episodes
    "test": dict(train_envs=["Acrobot-v1", "PointGoal0-v0"], ppo_runs=1, ppo_steps=512, ppo_envs=8,
                 ppo_rollout=32, n_segments=2, segment_len=32, steps=3, batch_size=4, log_every=1,
                 proj="signperm"),
    # classic control and 2-D PointGoal tasks; PointGoal3D-v0 held out (evaluate.py). Signed-permutation
    # projections: the cheapest member of the family of random linear maps (README); ~6 min on one core
    # max_seconds: a safety net under CPU contention (seed.toml's timeout is 900 s)
    "smoke": dict(proj="signperm", max_seconds=660),
    # thesis sec. 6.3: PPO histories on Ant (v5 is gymnasium's current version of Ant-v4), a larger
    # Transformer and longer context; meant for a GPU (PPO itself still runs on the CPU)
    "full": dict(train_envs=["Ant-v5"], proj="gaussian", ppo_runs=16, ppo_steps=2_000_000, ppo_envs=16,
                 ppo_rollout=256, n_segments=16, segment_len=256, steps=50_000, batch_size=32, d_model=256,
                 n_layer=4, n_head=8, log_every=500),
}


def make_histories(args, seed):
    """PPO learning histories: list of dicts of tensors shaped (iterations, rollout, lanes, ...)."""
    cfg = PPOConfig(n_envs=args.ppo_envs, n_steps=args.ppo_rollout, lr=args.ppo_lr)
    hists, curves = [], {}
    for env_id in args.train_envs:
        for run in range(args.ppo_runs):
            t0 = time.time()
            h = run_ppo(env_id, args.ppo_steps, seed=1000 * seed + 17 * run, cfg=cfg, record=True)
            r = np.array(h["iter_return"])
            curves[f"{env_id}/{run}"] = [None if np.isnan(x) else x for x in r.tolist()]
            k = max(1, len(r) // 5)
            first, last = (float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")
                           for x in (r[:k], r[-k:]))
            print(f"PPO {env_id} run {run}: {len(r)} iterations, mean episode return first fifth {first:.1f}"
                  f" -> last fifth {last:.1f} ({time.time() - t0:.1f}s)", flush=True)
            hists.append({"env": env_id, **{k: torch.as_tensor(h[k]) for k in
                                            ("obs", "act", "rew", "term", "trunc", "mean", "std")}})
    return hists, curves


def sample_sequence(h, args, gen):
    """One sequence of n_segments * segment_len steps from history h, with fresh projections."""
    iters, T, N = h["obs"].shape[:3]
    S, seg = args.n_segments, args.segment_len
    g = min(args.gap, (iters - 1) // (S - 1)) if S > 1 else 0
    starts = iters - (S - 1) * g  # first iterations from which S segments g apart fit in the history
    k0 = int(torch.randint(max(1, round(args.start_frac * starts)), (1,), generator=gen))
    lane = int(torch.randint(N, (1,), generator=gen))
    off = int(torch.randint(T - seg + 1, (1,), generator=gen))
    its = k0 + g * torch.arange(S)
    keys = ("obs", "act", "rew", "term", "trunc", "mean", "std")
    take = {k: h[k][its, off : off + seg, lane] for k in keys}

    def prev(x):  # value of the previous step within the segment; zero at each segment start
        return torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)

    ended = torch.maximum(take["term"], take["trunc"])
    new_ep = prev(ended)
    new_ep[:, 0] = 1.0  # a segment start is like the start of an episode: the agent never saw s_{i-1}
    flat = lambda x: x.reshape(S * seg, *x.shape[2:])  # noqa: E731
    w_s, w_a, w_pinv = random_projections(h["obs"].shape[-1], h["act"].shape[-1], args.obs_proj,
                                          args.act_proj, gen, args.proj)
    tokens = sequence_tokens(flat(take["obs"]), flat(prev(take["act"])), flat(prev(take["rew"])),
                             flat(new_ep), flat(prev(take["term"])), w_s, w_a, args.rew_norm)
    weight = torch.ones(S, seg)
    if not args.loss_first_segment:
        weight[0] = 0.0
    return tokens, w_pinv, flat(take["mean"]), flat(take["std"]), weight.reshape(-1)


def symmetric_kl(mean, std, w_pinv, p_mean, p_std):
    """KL(p||q) + KL(q||p) per step, divided by the action dimension d.

    q is the GLA's Gaussian over u in R^A mapped to the environment's actions a = W^+ u:
    N(W^+ mean, W^+ diag(std^2) W^+^T); p is PPO's N(p_mean, diag(p_std^2)).
    mean, std (B, L, A); w_pinv (B, d, A); p_mean, p_std (B, L, d) -> (B, L).
    """
    d = p_mean.shape[-1]
    m = torch.einsum("bda,bla->bld", w_pinv, mean)
    cov = torch.einsum("bda,bla,bea->blde", w_pinv, std**2, w_pinv) + 1e-6 * torch.eye(d, device=mean.device)
    cov_inv = torch.linalg.inv(cov)
    p_var, delta = p_std**2, m - p_mean
    tr = (torch.diagonal(cov_inv, dim1=-2, dim2=-1) * p_var).sum(-1) + (torch.diagonal(cov, dim1=-2, dim2=-1)
                                                                        / p_var).sum(-1)
    quad = torch.einsum("bld,blde,ble->bl", delta, cov_inv, delta) + (delta**2 / p_var).sum(-1)
    return (0.5 * (tr + quad) - d) / d


def train(args, scale, seed, out, device):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    t_start = time.time()
    hists, curves = make_histories(args, seed)
    t_hist = time.time() - t_start
    kwargs = dict(obs_proj=args.obs_proj, act_proj=args.act_proj, d_model=args.d_model, n_layer=args.n_layer,
                  n_head=args.n_head, max_len=args.n_segments * args.segment_len, proj=args.proj,
                  pos_emb=args.pos_emb, rew_norm=args.rew_norm)
    model = GLA(**kwargs).to(device)
    opt = Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    print(f"GLA params={sum(p.numel() for p in model.parameters())} context={kwargs['max_len']} "
          f"histories={len(hists)} device={device}", flush=True)
    log = {"step": [], "loss": [], "elapsed_s": [], "history_seconds": t_hist, "ppo_curves": curves}
    run_loss, n_run = 0.0, 0
    for step in range(1, args.steps + 1):
        picks = torch.randint(len(hists), (args.batch_size,), generator=gen).tolist()
        batch = [sample_sequence(hists[i], args, gen) for i in picks]
        tokens = torch.stack([b[0] for b in batch]).to(device)
        mean, std, _ = model(tokens)
        loss, weight_sum = 0.0, 0.0
        for d in sorted({b[1].shape[0] for b in batch}):  # group by action dimension for the KL
            idx = [j for j, b in enumerate(batch) if b[1].shape[0] == d]
            w_pinv, p_mean, p_std, w = (torch.stack([batch[j][k] for j in idx]).to(device)
                                        for k in (1, 2, 3, 4))
            kl = symmetric_kl(mean[idx], std[idx], w_pinv, p_mean, p_std)
            loss, weight_sum = loss + (kl * w).sum(), weight_sum + w.sum()
        loss = loss / weight_sum
        opt.zero_grad()
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        opt.lr = args.lr * 0.5 * (1 + np.cos(np.pi * (step - 1) / args.steps))  # cosine decay
        opt.step()
        run_loss, n_run = run_loss + loss.item(), n_run + 1
        over_time = time.time() - t_start > args.max_seconds
        if step % args.log_every == 0 or step == args.steps or over_time:
            log["step"].append(step)
            log["loss"].append(run_loss / n_run)
            log["elapsed_s"].append(time.time() - t_start)
            print(f"step {step:5d}  sym-KL {run_loss / n_run:.4f}  elapsed {time.time() - t_start:6.1f}s",
                  flush=True)
            run_loss, n_run = 0.0, 0
        if over_time:
            print(f"stopping at step {step} of {args.steps}: max_seconds={args.max_seconds} reached",
                  flush=True)
            break
    save(out, model, kwargs, args, scale, seed, log)


# scientist: frozen-begin  (CLI and checkpoint format read by evaluate.py)
def save(out, model, kwargs, args, scale, seed, log):
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"model_kwargs": kwargs, "state_dict": model.state_dict(), "args": dataclasses.asdict(args),
                "train_envs": list(args.train_envs), "scale": scale, "seed": seed}, out / "checkpoint.pt")
    (out / "train_log.json").write_text(json.dumps(log, indent=1))
    print(f"saved {out / 'checkpoint.pt'}", flush=True)


def parse_set(args, items):
    """--set FIELD=VALUE overrides of Args (values parsed as JSON, else kept as strings)."""
    kinds = {f.name: f for f in dataclasses.fields(args)}
    changes = {}
    for item in items:
        name, _, raw = item.partition("=")
        if name not in kinds:
            raise SystemExit(f"--set: Args has no field {name!r}")
        try:
            changes[name] = json.loads(raw)
        except json.JSONDecodeError:
            changes[name] = raw
    return dataclasses.replace(args, **changes)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="auto", help="auto = cuda if available, else cpu")
    p.add_argument("--set", action="append", default=[], help="override an Args field, e.g. --set steps=1")
    cli = p.parse_args()
    torch.set_num_threads(1)  # the framework runs training seeds in parallel, one core each
    device = cli.device if cli.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    args = parse_set(dataclasses.replace(Args(), **SCALES[cli.scale]), cli.set)
    train(args, cli.scale, cli.seed, cli.out, torch.device(device))


if __name__ == "__main__":
    main()
# scientist: frozen-end
