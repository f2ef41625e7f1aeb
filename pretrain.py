"""
Pretrain a tiny dLLM on the synthetic tasks with the masked-diffusion loss (LLaDA's SFT objective):
per example draw t ~ U(eps, 1), mask each answer token (end-of-text padding included) with probability
t, never the prompt, and minimise cross-entropy on the masked tokens weighted by 1/t, normalised by the
answer length. The result is the frozen environment for the unmasking policies, small enough to train on
two CPU cores in a few minutes.

    python pretrain.py --name tiny      # about 8 minutes on 2 CPU cores, writes out/tiny.pt
    python pretrain.py --name tiny-b    # the second model (other seed and size), for model transfer
"""
import math
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from model import CharTokenizer, ModelConfig, Transformer, parse_dataclass, save_tiny
from tasks import make_sub, make_sum

# The two tiny models: same family, different seed and size (model-transfer experiments).
SIZES = {"tiny": dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden=384, seed=0),
         "tiny-b": dict(d_model=160, n_layers=3, n_heads=4, n_kv_heads=2, mlp_hidden=448, seed=1)}


@dataclass
class PretrainConfig:
    name: str = "tiny"         # which tiny model (sets size and seed)
    out_dir: str = "out"       # writes {out_dir}/{name}.pt
    steps: int = 4000          # optimizer steps
    batch_size: int = 64       # sequences per step
    lr: float = 3e-3           # peak AdamW learning rate
    warmup: int = 100          # linear warm-up steps, then cosine to lr/10
    gen_length: int = 32       # answer buffer L the models mostly see ...
    long_frac: float = 0.10    # ... and this fraction of batches use 2L (length-transfer experiments)
    sub_frac: float = 0.10     # fraction of out-of-domain 'sub' problems in the mix
    eps: float = 0.1           # t ~ U(eps, 1); not LLaDA's 1e-3: with 32 answer tokens a tiny t weighs one token up to 1000x
    threads: int = 0           # torch threads (0: leave torch's default)


def make_batch(rng, tok, n, L, sub_frac):
    """(x0 (n, P+L) clean ids, attention mask (n, P+L), P) with prompts left-padded."""
    probs = [make_sub(rng) if rng.random() < sub_frac else make_sum(rng) for _ in range(n)]
    prompts = [tok.encode(p.question) for p in probs]
    answers = [tok.encode(p.reference) for p in probs]
    P = max(map(len, prompts))
    x0 = torch.full((n, P + L), tok.eos_token_id, dtype=torch.long)
    am = torch.ones((n, P + L), dtype=torch.long)
    for i, (p, a) in enumerate(zip(prompts, answers)):
        assert len(a) <= L, f"answer of {len(a)} tokens does not fit L={L}"
        x0[i, :P - len(p)], am[i, :P - len(p)] = tok.pad_token_id, 0
        x0[i, P - len(p):P] = torch.tensor(p)
        x0[i, P:P + len(a)] = torch.tensor(a)
    return x0, am, P


def diffusion_loss(net, x0, am, P, mask_id, eps, gen):
    """Masked-diffusion loss on the answer part x0[:, P:] (LLaDA eq. 3, SFT form)."""
    n, L = x0.shape[0], x0.shape[1] - P
    u = (torch.rand(1, generator=gen) + torch.arange(n) / n) % 1             # stratified over the batch
    t = (eps + (1 - eps) * u)[:, None]                                       # (n, 1) ~ U(eps, 1)
    masked = torch.rand(n, L, generator=gen) < t                             # (n, L)
    xt = x0.clone()
    xt[:, P:][masked] = mask_id
    logits = net(xt, am)[:, P:]                                              # (n, L, V)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x0[:, P:].reshape(-1), reduction="none")
    return ((ce.view(n, L) * masked / t).sum(1) / L).mean()


def pretrain(cfg: PretrainConfig):
    if cfg.name not in SIZES:
        raise ValueError(f"unknown tiny model {cfg.name!r}; choose one of {sorted(SIZES)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    size = dict(SIZES[cfg.name])
    seed = size.pop("seed")
    # --- seeds: model init, masking noise and the data stream all derive from the model's seed
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(f"pretrain-{seed}")
    tok = CharTokenizer()
    net = Transformer(ModelConfig(vocab_size=len(tok), **size))
    print(f"pretraining {cfg.name}: {sum(p.numel() for p in net.parameters()) / 1e6:.2f}M params, config {asdict(cfg)}")
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
    sched = lambda s: min(1, (s + 1) / cfg.warmup) * (0.1 + 0.45 * (1 + math.cos(math.pi * s / cfg.steps)))
    t0, ema = time.time(), None
    bar = tqdm(range(cfg.steps), desc=f"pretrain {cfg.name}", mininterval=2)
    for step in bar:
        L = cfg.gen_length * (2 if rng.random() < cfg.long_frac else 1)
        x0, am, P = make_batch(rng, tok, cfg.batch_size, L, cfg.sub_frac)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * sched(step)
        loss = diffusion_loss(net, x0, am, P, tok.mask_token_id, cfg.eps, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}")
    minutes = (time.time() - t0) / 60
    path = f"{cfg.out_dir}/{cfg.name}.pt"
    save_tiny(path, net, {"pretrain": asdict(cfg), "minutes": minutes, "final_loss": ema})
    print(f"wrote {path} after {minutes:.1f} min, loss {ema:.4f}")
    return path


if __name__ == "__main__":
    try:
        pretrain(parse_dataclass(PretrainConfig, description="pretrain a tiny dLLM (masked-diffusion loss)"))
    except ValueError as e:
        raise SystemExit(f"error: {e}")
