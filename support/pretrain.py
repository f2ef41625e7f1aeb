"""
Pretrain a tiny dLLM on the synthetic tasks with the masked-diffusion loss (LLaDA's SFT objective):
per example draw t ~ U(eps, 1), mask each answer token (end-of-text padding included) with probability
t, never the prompt, and minimise cross-entropy on the masked tokens weighted by 1/t, normalised by the
answer length. A share of the rows also masks everything after a random cut: the contexts left-to-right and
semi-autoregressive decoding present, which random masking alone shows too rarely for a small model to learn
to compute forward (it learned to infer values from their right-hand context instead). The result is the
frozen environment for the unmasking policies; the repository ships both in weights/.

    python -m support.pretrain --name tiny      # 11 minutes on 2 CPU cores, writes out/tiny.pt (use it as --model out/tiny.pt)
    python -m support.pretrain --name tiny-b    # the second model (other seed and size), for model transfer
    python -m support.pretrain --check tiny     # the trap test: does this world make confidence rules fail?
"""
import math
import os
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from common.chars import CharTokenizer
from common.cli import check_args, check_counts, check_out_file, check_threads, interrupted, option, parse_config
from common.memory import check as check_memory
from common.memory import pretrain_plan
from model import ModelConfig, Transformer, save_tiny
from policy import Action
from tasks import STEP_CHARS, STEPS, make_chain, make_sub

MAX_ANSWER = STEPS[1] * STEP_CHARS + 2   # the longest chain answer: its steps of "+dvf", '#' and the answer

# The two tiny models: same family, different seed and size (model-transfer experiments).
SIZES = {"tiny": dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden=384, seed=0),
         "tiny-b": dict(d_model=128, n_layers=4, n_heads=4, n_kv_heads=4, mlp_hidden=512, seed=1)}


@dataclass
class PretrainConfig:
    name: str = option("tiny", "which tiny model (sets size and seed)")
    out_dir: str = option("out", "writes {out_dir}/{name}.pt")
    steps: int = option(4000, "optimizer steps")
    batch_size: int = option(64, "sequences per step")
    lr: float = option(3e-3, "peak AdamW learning rate")
    warmup: int = option(100, "linear warm-up steps, then cosine to lr/10")
    gen_length: int = option(32, "answer buffer L the models mostly see ...")
    long_frac: float = option(0.10, "... and this fraction of batches use 2L (length-transfer experiments)")
    sub_frac: float = option(0.10, "fraction of out-of-domain 'sub' problems in the mix")
    eps: float = option(0.1, "t ~ U(eps, 1); not LLaDA's 1e-3: with 32 answer tokens a tiny t weighs one token up to 1000x")
    suffix_frac: float = option(0.7, "share of rows that also mask everything after a random cut (the contexts "
                                     "left-to-right decoding shows)")
    threads: int = option(0, "torch threads (0: leave torch's default)")
    check: str = option(None, "instead of training: print the trap diagnostics of this tiny dLLM (name or *.pt)")
    num_problems: int = option(500, "problems for --check (--n for short)")


def make_batch(rng, tok, n, L, sub_frac):
    """(x0 (n, P+L) clean ids, attention mask (n, P+L), P) with prompts left-padded."""
    probs = [make_sub(rng) if rng.random() < sub_frac else make_chain(rng) for _ in range(n)]
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


def diffusion_loss(net, x0, am, P, mask_id, eps, gen, suffix_frac=0.0):
    """Masked-diffusion loss on the answer part x0[:, P:] (LLaDA eq. 3, SFT form). A share suffix_frac of the
    rows also masks every answer position from a random cut on; their loss is the mean cross-entropy over their
    masked tokens (the random rows' 1/t-weighted sum estimates the same per-token scale)."""
    n, L = x0.shape[0], x0.shape[1] - P
    u = (torch.rand(1, generator=gen) + torch.arange(n) / n) % 1             # stratified over the batch
    t = (eps + (1 - eps) * u)[:, None]                                       # (n, 1) ~ U(eps, 1)
    masked = torch.rand(n, L, generator=gen) < t                             # (n, L)
    suffix = torch.rand(n, generator=gen) < suffix_frac                      # (n,) rows with a masked suffix
    cut = torch.randint(0, L, (n, 1), generator=gen)
    masked = masked | (suffix[:, None] & (torch.arange(L) >= cut))
    xt = x0.clone()
    xt[:, P:][masked] = mask_id
    logits = net(xt, am)[:, P:]                                              # (n, L, V)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), x0[:, P:].reshape(-1), reduction="none").view(n, L)
    per_row = torch.where(suffix, (ce * masked).sum(1) / masked.sum(1).clamp(min=1), (ce * masked / t).sum(1) / L)
    return per_row.mean()


def pretrain(cfg: PretrainConfig, command=None):
    if cfg.name not in SIZES:
        raise ValueError(f"unknown tiny model {cfg.name!r}; choose one of {sorted(SIZES)}")
    check_counts(steps=(cfg.steps, 1), batch_size=(cfg.batch_size, 1), gen_length=(cfg.gen_length, 1))
    check_args(eps=(cfg.eps, "in (0, 1)"), lr=(cfg.lr, "> 0"), warmup=(cfg.warmup, ">= 1"),
               long_frac=(cfg.long_frac, "in [0, 1]"), sub_frac=(cfg.sub_frac, "in [0, 1]"),
               suffix_frac=(cfg.suffix_frac, "in [0, 1]"))
    check_threads(cfg.threads)
    if cfg.gen_length < MAX_ANSWER:
        raise ValueError(f"--gen-length {cfg.gen_length} is shorter than the longest answer ({MAX_ANSWER} tokens)")
    path = f"{cfg.out_dir}/{cfg.name}.pt"
    if os.path.exists(path):  # never overwrite a model (the shipped ones included): checked before any work
        raise ValueError(f"{path} exists: pass another --out-dir, or delete it first")
    check_out_file(path, "--out-dir")                             # writable now, not after minutes of training
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    size = dict(SIZES[cfg.name])
    seed = size.pop("seed")
    # a prompt (< 32 tokens), the longest buffer
    longest = 32 + cfg.gen_length * (2 if cfg.long_frac > 0 else 1)
    check_memory(pretrain_plan(ModelConfig(vocab_size=len(CharTokenizer()), **size), cfg.batch_size, longest), "cpu",
                 "--batch-size or --gen-length", loaded=("runtime",))
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
        loss = diffusion_loss(net, x0, am, P, tok.mask_token_id, cfg.eps, gen, cfg.suffix_frac)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.4f}")
    minutes = (time.time() - t0) / 60
    defaults = asdict(PretrainConfig())
    command = command or "python -m support.pretrain " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in asdict(cfg).items()
                                               if k in ("name", "out_dir") or v != defaults[k])
    save_tiny(path, net, {"pretrain": asdict(cfg), "command": command, "minutes": minutes, "final_loss": ema})
    print(f"wrote {path} after {minutes:.1f} min, loss {ema:.4f}")
    return path


# ----------------------------------------------------------------------------------------------------
# does the world contain the trap? (measured on the policies' problems, before any GRPO run)

class Order:
    """A diagnostic decoding order with oracle access to the proposals and the chain's layout (each step "+dvf":
    op, digit, value, filler). left-to-right: one token per step. answer-first: at step 1 everything from the
    first proposed '#' on - the answer slot and the padding, as LLaDA's confidence rules do in full diffusion -
    then the rest one token per step left to right. values: at step 1 everything but the values and the answer
    digit (ops, fillers, '#', padding), then the values one per step left to right and the answer digit: one NFE
    more than the chain has steps, an order a policy could learn and no confidence rule follows."""

    def __init__(self, hash_id, mode):
        self.hash_id, self.mode, self.spec = hash_id, mode, mode

    def check(self, L, BL):
        pass

    def act(self, obs):
        b, L = obs.cand.shape
        pos = torch.arange(L, device=obs.cand.device).expand(b, L)
        leftmost = lambda m: torch.where(m, pos, L).min(1, keepdim=True).values
        h = torch.where(obs.x0 == self.hash_id, pos, L).min(1, keepdim=True).values   # the first proposed '#'
        pick = obs.cand & (pos == leftmost(obs.cand))                      # the leftmost masked position
        if self.mode == "answer-first":
            pick = torch.where((obs.t == 0)[:, None] & (h < L), obs.cand & (pos >= h), pick)
        elif self.mode == "values":
            value = (pos < h) & (pos % STEP_CHARS == 2)
            nxt = leftmost(obs.cand & value)                               # the next value to compute
            pick = obs.cand & ((~value & (pos != h + 1)) | (pos == nxt))   # the answer digit after the last value
            pick = torch.where(pick.any(1, keepdim=True), pick, obs.cand)
        return Action(pick)


@torch.no_grad()
def check_world(name, n=500, task="chain", L=32):
    """Print the trap test: one-shot vs step-by-step accuracy, answer-first vs answer-last, and how confident
    the answer slot is at step 1 next to the reasoning tokens. Returns the numbers as a dict."""
    check_counts(num_problems=(n, 1))
    from steps import token_stats
    from model import load_dllm
    from decode import parse_policy
    from decode import evaluate
    from tasks import get_problems, prompts_of
    dllm = load_dllm(name, device="cpu")
    probs = get_problems(task, n, 0, "test")
    hash_id = dllm.tokenizer.stoi["#"]
    out = {}
    for label, pol, BL in [("everything in one step", parse_policy("topk:steps=1"), L),
                           ("one token per step, left to right", Order(hash_id, "left-to-right"), 1),
                           ("answer slot and padding first, then left to right", Order(hash_id, "answer-first"), L),
                           ("the rest at step 1, then the values and the answer one per step", Order(hash_id, "values"), L),
                           (f"one token per step by confidence (topk:steps={L}), full diffusion", parse_policy(f"topk:steps={L}"), L),
                           ("threshold:0.9, full diffusion", parse_policy("threshold:0.9"), L),
                           ("threshold:0.9, blocks of 8", parse_policy("threshold:0.9"), 8)]:
        row, _ = evaluate(dllm, pol, probs, task, L, BL, progress=False)
        out[label] = row["accuracy"]
        print(f"{label:<66} {row['accuracy']:5.1f}% @ {row['mean_nfe']:5.2f} NFE")
    # step 1, everything masked: the answer digit (after the first proposed '#') against the reasoning tokens
    ids, am = prompts_of(dllm, probs)
    x = torch.cat([ids, torch.full((len(probs), L), dllm.mask_id)], 1)
    logits = dllm.logits(x, torch.cat([am, torch.ones_like(x[:, -L:])], 1), start=ids.shape[1])
    x0, conf, _, _ = token_stats(logits)                                   # the env's own x0 and conf
    above, conf_ans, is_gold = [], [], []
    for i, p in enumerate(probs):
        hs = (x0[i] == hash_id).nonzero()
        if not len(hs) or hs[0, 0] + 1 >= L:
            continue
        h = hs[0, 0].item()
        a = dllm.tokenizer.itos[x0[i, h + 1]]
        above.append((conf[i, :h] < conf[i, h + 1]).float().mean().item())
        conf_ans.append(conf[i, h + 1].item())
        is_gold.append(a == p.gold)
    m = lambda v: sum(v) / max(1, len(v))
    out.update(answer_conf=m(conf_ans), reasoning_below=m(above), answer_is_gold=m(is_gold))
    print(f"step 1, all masked ({len(conf_ans)} of {n} propose a '#'): answer-slot confidence {m(conf_ans):.3f}, "
          f"above {100 * m(above):.1f}% of the reasoning tokens; it proposes the right answer {100 * m(is_gold):.1f}% "
          f"of the time")
    return out


def main(argv=None):
    try:
        cfg, command = parse_config(PretrainConfig, argv, "pretrain a tiny dLLM (masked-diffusion loss)",
                              "python -m support.pretrain")
        if cfg.check:
            return check_world(cfg.check, cfg.num_problems)
        return pretrain(cfg, command)
    except KeyboardInterrupt:
        raise interrupted("interrupted: nothing was written") from None
    except (ValueError, RuntimeError, OSError) as e:
        raise SystemExit(f"error: {e}")


if __name__ == "__main__":
    main()
