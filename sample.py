"""
Compare unmasking policies on a task: accuracy, mean NFE, tokens per NFE and seconds for each, through
the one env.generate loop, and show generations with the step at which each token was revealed.

    python sample.py --model tiny --task chain --gen-length 32 --block-length 32 --n 500 \
        --policies "random:steps=32,topk:steps=32,threshold:0.9,factor:1,eb:gamma=0.1" --json results.json
    python sample.py                                                            # the shipped policy vs heuristics
    python sample.py --policy out/ckpt.pt --policies "threshold:0.9" --show 2   # model, L, BL from ckpt
"""
import argparse
import json
import os
import time

import torch
from tqdm import tqdm

from support.cli import check_args, check_out_file
from env import CACHES, check_buffer, check_decoding, generate, row_keys
from model import check_model_name, load_dllm, resolve_device
from policy import LearnedPolicy, parse_policies, read_checkpoint
from tasks import ANSWER_PREFIX, SYSTEM_PROMPT, check_task, get_problems, grade_many

DEFAULTS = dict(model="tiny", task="chain", gen_length=32, block_length=32)
# What `python sample.py` with no policy flag compares: the shipped full-diffusion policy and these heuristics.
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "policy_full.pt")
HEURISTICS = "topk:steps=32,threshold:0.9,eb:gamma=0.01,pc:lam=1:steps=8,band:hi=0.9:lo=0.08"


def prompts_of(dllm, problems):
    """Left-padded prompt ids: each problem's question through the chat template, its answer prefill after it."""
    return dllm.encode([dllm.prompt_text(p.question, SYSTEM_PROMPT if p.system is None else p.system,
                                         ANSWER_PREFIX if p.prefix is None else p.prefix) for p in problems])


def evaluate(dllm, policy, problems, task, gen_length, block_length, batch_size=128, temperature=0.0,
             seed=0, progress=True, keep=0, cache="none", memo=None):
    """Run one policy over problems -> dict(accuracy, mean_nfe, tokens_per_nfe, seconds, n) and the first
    `keep` (problem, rollout row, text, correct) for display. memo: an env.ForwardMemo kept across calls on the same
    problems, dLLM and L, which spares the forwards of states an earlier call has computed (env.generate)."""
    correct = nfe = unmasked = 0
    shown, t0 = [], time.time()
    batches = range(0, len(problems), batch_size)
    for i in tqdm(batches, desc=f"{policy.spec}", leave=False, disable=None if progress else True):
        chunk = problems[i:i + batch_size]
        ids, am = prompts_of(dllm, chunk)
        keys = row_keys(seed, torch.arange(i, i + len(chunk)))  # a problem's draws (policy and dLLM) do not depend on batching
        r = generate(dllm, policy, ids, am, gen_length, block_length, temperature, keys=keys, cache=cache,
                     memo=memo)
        texts = [dllm.decode(r.tokens[j].tolist()) for j in range(len(chunk))]
        for j, (p, text, ok) in enumerate(zip(chunk, texts, grade_many(task, chunk, texts))):
            correct += ok
            if len(shown) < keep:
                shown.append((p, r.tokens[j].cpu(), r.order[j].cpu(), text, ok))
        nfe += r.nfe.sum().item()
        unmasked += (r.order > 0).sum().item()
    n = len(problems)
    row = dict(policy=policy.spec, accuracy=100.0 * correct / n, mean_nfe=nfe / n,
               tokens_per_nfe=unmasked / max(nfe, 1), seconds=time.time() - t0, n=n)
    return row, shown


def show_generation(dllm, problem, tokens, order, text, ok):
    """Two aligned lines: each generated token, and the step (NFE) at which it was unmasked."""
    toks = [("." if t == dllm.eos_id else dllm.decode([t]) or "?") if dllm.is_tiny else dllm.tokenizer.decode([t])
            for t in tokens.tolist()]
    steps = [str(s) if s else "-" for s in order.tolist()]
    w = [max(len(a), len(b)) + 1 for a, b in zip(toks, steps)]
    print(f"  prompt {problem.question!r}  gold {problem.gold!r}  -> {text!r} {'correct' if ok else 'WRONG'}")
    print("  token " + "".join(a.rjust(k) for a, k in zip(toks, w)))
    print("  step  " + "".join(b.rjust(k) for b, k in zip(steps, w)))


def table(rows):
    head = f"{'policy':<28} {'accuracy':>8} {'mean NFE':>9} {'tok/NFE':>8} {'seconds':>8} {'n':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['policy']:<28} {r['accuracy']:>8.1f} {r['mean_nfe']:>9.2f} {r['tokens_per_nfe']:>8.2f} "
                     f"{r['seconds']:>8.1f} {r['n']:>5}")
    return "\n".join(lines)


def resolve(args):
    """Explicit flags win, then the learned policy's checkpoint, then DEFAULTS. No policy flag at all: the shipped
    learned policy (SHIPPED) beside the paper's heuristics and the band rule (HEURISTICS)."""
    if not args.policy and args.policies is None:
        args.policies = HEURISTICS
        if os.path.isfile(SHIPPED):
            args.policy = os.path.relpath(SHIPPED)
    ck_args = {}
    if args.policy:   # 'ckpt.pt' or 'ckpt.pt:alpha=3': the options are the policy's, the setup the file's
        ck_args = read_checkpoint(args.policy.split(":")[0])["args"]
    for k, v in DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, ck_args.get(k, v))
    return args


def check(args, policies):
    """Every argument, before any model is loaded (a real one is 16 GB): one clear error each."""
    check_args(n=(args.n, "> 0"), batch_size=(args.batch_size, "> 0"), temperature=(args.temperature, ">= 0"),
               tau=(args.tau, "> 0"), gen_length=(args.gen_length, "> 0"), block_length=(args.block_length, "> 0"),
               show=(args.show, ">= 0"))
    check_decoding(args.gen_length, args.block_length, args.cache)
    check_task(args.task, args.data)
    learned = [p for p in policies if isinstance(p, LearnedPolicy)]
    if args.tau is not None and not learned:
        raise ValueError("--tau sets a learned policy's temperature, and no checkpoint is among the policies")
    for pol in policies:
        pol.check(args.gen_length, args.block_length)
    if args.json:
        check_out_file(args.json, "--json")


def main(argv=None):
    p = argparse.ArgumentParser(description="compare unmasking policies on a task",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=None, help="dLLM: tiny, tiny-b, llada, llada-1.5, dream, a local dir or *.pt (default tiny, or the checkpoint's)")
    p.add_argument("--task", default=None, help="chain, sub (tiny world) or gsm8k, math500 (default chain, or the checkpoint's)")
    p.add_argument("--policies", default=None, help="(none given: the shipped policy and the paper's heuristics) comma-separated policy specs, e.g. 'topk:steps=32,threshold:0.9,out/ckpt.pt'")
    p.add_argument("--policy", default=None, help="a learned policy checkpoint (ckpt.pt, ckpt.pt:alpha=A); sets model, task, L and BL unless given")
    p.add_argument("--gen-length", type=int, default=None, help="L, the generation buffer (default 32, or the checkpoint's)")
    p.add_argument("--block-length", type=int, default=None, help="BL; BL == L is full diffusion (default 32, or the checkpoint's)")
    p.add_argument("--n", type=int, default=500, help="number of problems")
    p.add_argument("--batch-size", type=int, default=128, help="prompts per generate call")
    p.add_argument("--temperature", type=float, default=0.0, help="dLLM sampling temperature (0: greedy)")
    p.add_argument("--tau", type=float, default=None, help="policy temperature for learned policies")
    p.add_argument("--seed", type=int, default=0, help="problem set and policy randomness")
    p.add_argument("--data", default=None, help="local jsonl for gsm8k / math500 / humaneval / mbpp (official layouts)")
    p.add_argument("--split", default="test", choices=("train", "test"), help="problem split")
    p.add_argument("--json", default=None, help="write the rows to this JSON file (its folder is created)")
    p.add_argument("--show", type=int, default=0, help="print K generations per policy with the unmask step of each token")
    p.add_argument("--cache", default="none", choices=CACHES, help="KV cache (semi-AR only; prefix and dual are approximate, see env.py)")
    p.add_argument("--device", default=None, help="cuda, mps or cpu (default: autodetect)")
    p.add_argument("--revision", default=None, help="hub revision of the dLLM")
    args = p.parse_args(argv)
    try:
        args = resolve(args)
        specs = ",".join(s for s in (args.policy, args.policies) if s)
        policies = parse_policies(specs)                  # on the CPU: checked before the model loads
        check(args, policies)
        check_model_name(args.model)
        device = resolve_device(args.device)
        problems = get_problems(args.task, args.n, args.seed, args.split, args.data)
        dllm = load_dllm(args.model, device=device, revision=args.revision)
        check_buffer(dllm, min(args.batch_size, len(problems)), prompts_of(dllm, problems)[0].shape[1], args.gen_length)
        for pol in policies:
            if isinstance(pol, LearnedPolicy):
                pol.to(dllm.device)
                if args.tau is not None:
                    pol.tau, pol.spec = args.tau, f"{pol.spec}:tau={args.tau}"
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}")
    print(f"model {dllm.name} on {dllm.device} ({dllm.net.tok_emb.weight.dtype}), task {args.task}, "
          f"L={args.gen_length} BL={args.block_length}, n={len(problems)}, T={args.temperature}, cache {args.cache}")
    rows = []
    for pol in policies:
        row, shown = evaluate(dllm, pol, problems, args.task, args.gen_length, args.block_length,
                              args.batch_size, args.temperature, args.seed, keep=args.show, cache=args.cache)
        row.update(model=args.model, task=args.task, gen_length=args.gen_length, block_length=args.block_length,
                   cache=args.cache)
        rows.append(row)
        for s in shown:
            print(f"[{pol.spec}]")
            show_generation(dllm, *s)
    print(table(rows))
    if args.json:
        tmp = args.json + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(rows, f, indent=1)
            os.replace(tmp, args.json)
        except OSError as e:   # checked before the work, but the disk can still fill up
            if os.path.exists(tmp):
                os.remove(tmp)
            raise SystemExit(f"error: could not write {args.json} ({e.strerror or e})")
        print(f"wrote {args.json}")
    return rows


if __name__ == "__main__":
    main()
