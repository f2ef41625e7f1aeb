"""
One verdict per claim of the paper, from the suite's rows: what a learned policy's row is (its alpha, tau, beta,
variant), and the verdicts the suite's report prints. Kept apart from report.py (tables and pictures) because this
is the part a reader argues with: each threshold is here, in one place.

Matched NFE (eval.best_at): a policy at mean NFE x is compared with the best hand-rule accuracy among the hand-rule
rows of the same setting whose mean NFE is at most 1.1 x ("read off the sweep"). The gap is the policy's accuracy
minus that. The paper's claims are judged against its own heuristics (policy.Heuristic.group "paper": top-k, random,
margin, entropy, threshold, factor, EB-sampler); each such verdict prints the gap against the end-of-text-aware
rules (PC-Sampler, EOS damping) too, and the band rule has a verdict of its own.
"""
from eval import best_at
from policy import RULES

BUDGETS = (4, 6, 8, 12, 16, 32)
TRAINED_DEFAULTS = dict(expert=None, actions="bernoulli", width=None, alpha_range=None)   # left out of rows' "trained"


def trained(r, key):
    """A learned row's training setting (eval.trained_on leaves the ones at their default out)."""
    return r["trained"].get(key, TRAINED_DEFAULTS.get(key))


def group(r):
    """A hand-rule row's group: "paper", "eos-aware" or "hand" (policy.Heuristic.group)."""
    rule = RULES.get(family(r))
    return rule.group if rule else "hand"


def is_learned(r):
    return "trained" in r


def option(r, key, default=None):
    """An option of a learned row's spec ('ckpt.pt:tau=1.0:alpha=3' -> tau 1.0, alpha 3.0)."""
    for part in r["policy"].split(":")[1:]:
        k, _, v = part.partition("=")
        if k == key:
            return float(v)
    return default


def tau_of(r):
    """The policy temperature of a learned row (its spec has ':tau=T')."""
    return option(r, "tau", 1.0)


def is_cond(r):
    """A row of the alpha-conditioned policy (train.py --alpha-range), read at the alpha of its spec."""
    return is_learned(r) and bool(trained(r, "alpha_range"))


def variant(r):
    """'es', 'dpls' or 'beta' for a learned row of the appendices' variants (expert steering, Plackett-Luce actions,
    a test-time beta), None for the paper's main kind of policy (and for heuristics and the alpha-conditioned policy,
    which has verdicts of its own, even when it was trained with an expert)."""
    if not is_learned(r) or is_cond(r):
        return None
    if trained(r, "expert"):
        return "es"
    if trained(r, "actions") != "bernoulli":
        return trained(r, "actions")
    return "beta" if option(r, "beta") is not None else None


def plain(r):
    """A learned row of the paper's main kind: one policy per alpha, Bernoulli actions, no beta, no expert."""
    return is_learned(r) and not is_cond(r) and variant(r) is None


def family(r):
    return "learned" if is_learned(r) else r["policy"].split(":")[0]


def is_heuristic(r):
    return not is_learned(r)


def paper_heuristic(r):
    return is_heuristic(r) and group(r) == "paper"


def gaps(rows, heuristic=is_heuristic):
    """(policy row, best heuristic at matched NFE, gap) for each learned row of one setting; heuristic: which rows
    count as the heuristics (default every one)."""
    heur = [r for r in rows if heuristic(r)]
    out = []
    for r in rows:
        if is_learned(r):
            b = best_at(heur, r["mean_nfe"])
            out.append((r, b, None if b is None else r["accuracy"] - b))
    return out


def label(r):
    if not is_learned(r):
        return r["policy"]
    t = r["trained"]
    if is_cond(r):
        es = f" ES {t['expert']}" if trained(r, "expert") else ""
        return f"learned alpha-conditioned, alpha={option(r, 'alpha'):g} tau={tau_of(r):g}{es} (BL {t['block_length']})"
    kind = variant(r)
    extra = "" if kind is None else " DPLS" if kind == "dpls" else \
        f" ES {t['expert']} BL {t['expert_block_length']}" if kind == "es" else f" beta={option(r, 'beta'):g}"
    extra += f" width {t['width']}" if trained(r, "width") else ""
    return (f"learned {'additive' if t['reward'] == 'additive' else 'alpha'}={t['alpha']:g} tau={tau_of(r):g}{extra} "
            f"(BL {t['block_length']})")


def best_gap(rows, reward="mult", tau=None, heuristic=is_heuristic):
    g = [(r, b, x) for r, b, x in gaps(rows, heuristic) if x is not None and r["trained"]["reward"] == reward
         and (tau is None or tau_of(r) == tau)]
    return max(g, key=lambda t: t[2]) if g else (None, None, None)


def fmt(r, b, g):
    if g is None:
        return "no policy point has a heuristic at matched NFE"
    return f"{label(r)}: {r['accuracy']:.1f}% @ {r['mean_nfe']:.2f} NFE vs best heuristic {b:.1f}% (gap {g:+.1f})"


def signed(g):
    """A gap as '+1.2', or 'n/a'."""
    return "n/a" if g is None else f"{g:+.1f}"


def verdict(held, claim, evidence):
    word = {True: "held", False: "did not hold", None: "mixed or not measurable"}[held]
    return f"- **{claim}: {word}.** {evidence}"


def agree(a, b):
    """One verdict from two settings' (semi-AR, full): the common value, or None (mixed) when they differ."""
    return a if a == b else None


def front_area(points, L):
    """Area under an accuracy-vs-log-NFE front, as a mean accuracy: the best accuracy reachable within a budget B,
    averaged over B log-uniform in [1, L] (200 budgets). Points (NFE, accuracy)."""
    budgets = [L ** (i / 199) for i in range(200)]
    best = lambda B: max([a for n, a in points if n <= B * (1 + 1e-9)], default=0.0)
    return sum(best(B) for B in budgets) / len(budgets)


NFE_NOISE = 0.05     # a rise of the conditioned policy's NFE between neighbouring alphas by at most this is noise
NFE_RANGE = 1.5      # "NFE follows alpha": the smallest alpha's NFE at least this times the largest's


def reward_optimal(rows, alpha, L):
    """The row that maximises accuracy * ((L - NFE + 1) / L) ** alpha at its mean NFE (the reward of the mean: a
    close proxy for the mean reward when the NFE spread is small): what an alpha-following choice among them takes.
    Ties (alpha 0 and several rows at one accuracy) go to the fewer NFE."""
    return max(rows, key=lambda r: (r["accuracy"] * ((L - r["mean_nfe"] + 1) / L) ** alpha, -r["mean_nfe"]))


def cond_verdicts(by, cfg, cond_logs, per_logs):
    """The alpha-conditioned policy against the per-alpha ones of its own kind (plain, or expert-steered when it was
    trained with an expert) and the heuristic front (semi-AR and full). cond_logs[BL]: its training log;
    per_logs[BL][alpha]: the per-alpha runs of its kind (one of which it starts from, cfg's cond_init_alpha)."""
    out, mono, near, heur_gap, picks = [], [], [], [], []
    for mode, name in (("semi-AR", "semi-AR"), ("full", "full diffusion")):
        rows = by[name]
        cond = sorted((r for r in rows if is_cond(r) and tau_of(r) == 1.0), key=lambda r: option(r, "alpha"))
        if not cond:
            continue
        es = bool(trained(cond[0], "expert"))
        per = [r for r in rows if (variant(r) == "es" if es else plain(r)) and r["trained"]["reward"] == "mult"
               and tau_of(r) == 1.0]
        heur = [r for r in rows if not is_learned(r)]
        rises = sum(b["mean_nfe"] > a["mean_nfe"] + NFE_NOISE for a, b in zip(cond, cond[1:]))
        ratio = cond[0]["mean_nfe"] / cond[-1]["mean_nfe"]
        mono.append((mode, not rises and ratio >= NFE_RANGE, ", ".join(f"{option(r, 'alpha'):g}: {r['mean_nfe']:.2f}"
                                                                       for r in cond), rises, ratio, es))
        # how far an alpha-following choice can move NFE in this world: the reward-optimal row per alpha
        alphas = [option(r, "alpha") for r in cond]
        best = lambda rs: [reward_optimal(rs, a, cfg["L"])["mean_nfe"] for a in alphas]
        picks.append((mode, best(heur), best(per) if per else None))
        gaps_ = []
        for p in sorted(per, key=lambda r: r["trained"]["alpha"]):
            b = best_at(cond, p["mean_nfe"])
            gaps_.append((p, None if b is None else b - p["accuracy"]))
        near.append((mode, all(g is not None and g >= -2 for _, g in gaps_), gaps_,
                     front_area([(r["mean_nfe"], r["accuracy"]) for r in cond], cfg["L"]),
                     front_area([(r["mean_nfe"], r["accuracy"]) for r in per], cfg["L"]),
                     front_area([(r["mean_nfe"], r["accuracy"]) for r in heur], cfg["L"]), es))
        g = [(r, best_at(heur, r["mean_nfe"])) for r in cond]
        g = [(r, b, r["accuracy"] - b) for r, b in g if b is not None]
        heur_gap.append((mode, max(g, key=lambda t: t[2]) if g else (None, None, None)))
    if not mono:
        return out
    kind = lambda es: " (expert-steered)" if es else ""
    span = lambda xs: f"{xs[0]:.2f} -> {xs[-1]:.2f} ({xs[0] / xs[-1]:.2f}x)"
    out.append(verdict(all(h for _, h, *_ in mono), f"One alpha-conditioned policy: mean NFE falls as alpha rises (no "
                       f"rise over {NFE_NOISE:g} NFE between neighbouring alphas, and at least {NFE_RANGE:g}x from the "
                       f"smallest alpha to the largest)",
                       "; ".join(f"{m}{kind(es)}: NFE at alpha {seq} ({n} rises, {r:.2f}x)" for m, _, seq, n, r, es in mono)
                       + ". The reward-optimal row per alpha of the same grid moves NFE " + "; ".join(
                           f"{m}: heuristics {span(h)}" + (f", per-alpha policies {span(p)}" if p else "")
                           for m, h, p in picks) + "."))
    minutes = lambda log: sum(x["rollout_s"] + x["update_s"] for x in log) / 60
    a0, cost = cfg.get("cond_init_alpha"), []
    for BL, log in sorted(cond_logs.items()):   # its cost includes the per-alpha run it starts from
        per, own = per_logs.get(BL, {}), minutes(log)
        start = per.get(a0) if a0 is not None else None
        cost.append(f"BL {BL}: {own + (minutes(start) if start else 0):.1f} min (its own run {own:.1f}"
                    + (f" and the alpha-{a0:g} run it starts from" if start else "")
                    + f") against {len(per)} per-alpha runs {sum(minutes(l) for l in per.values()):.1f} min")
    ev = []
    for mode, _, gaps_, a_c, a_p, a_h, es in near:
        ev.append(f"{mode}{kind(es)}: " + ", ".join(f"alpha {p['trained']['alpha']:g} ({p['accuracy']:.1f}% @ "
                                                   f"{p['mean_nfe']:.2f}) {signed(g)}" for p, g in gaps_)
                  + f"; front area (mean accuracy over log-NFE budgets) conditioned {a_c:.1f}, per-alpha {a_p:.1f}, "
                    f"heuristics and band rule {a_h:.1f}")
    out.append(verdict(all(h for _, h, *_ in near), "One alpha-conditioned policy is within 2 points of the per-alpha "
                       "policies of its kind at matched NFE (best conditioned point within 1.1x each per-alpha point's "
                       "NFE)", "; ".join(ev) + ". Cost: " + "; ".join(cost) + "."))
    out.append(verdict(all(a_c >= a_p for _, _, _, a_c, a_p, *_ in near), "The alpha-conditioned policy's front area "
                       "is at least the per-alpha policies'", "; ".join(f"{m}: {a_c:.1f} vs {a_p:.1f}"
                                                                       for m, _, _, a_c, a_p, *_ in near) + "."))
    out.append(verdict(None, "The alpha-conditioned policy against the heuristic front (reported, not a paper claim)",
                       "; ".join(f"{m}: best point {fmt(*t)}" for m, t in heur_gap) + "."))
    return out


def suite_verdicts(by, cfg, logs, cond_logs=None, per_logs=None):
    """by[setting name] -> summarized rows. Returns markdown lines. The paper's claims are judged on its own
    kind of policy (one per alpha); the alpha-conditioned policy gets its own verdicts at the end."""
    full_by = by
    by = {k: [r for r in v if not is_learned(r) or plain(r)] for k, v in by.items()}
    out, semi, full = [], by["semi-AR"], by["full diffusion"]
    # heuristics degrade with larger blocks: the heuristic fronts read at a few NFE budgets
    def degrade(heuristic):
        hs, hf = [r for r in semi if heuristic(r)], [r for r in full if heuristic(r)]
        pairs = [(B, best_at(hs, B, 1.0), best_at(hf, B, 1.0)) for B in BUDGETS]
        pairs = [(B, s, f) for B, s, f in pairs if s is not None and f is not None]
        diff = sum(s - f for _, s, f in pairs) / max(1, len(pairs))
        return diff, ", ".join(f"B={B}: {s:.1f} vs {f:.1f}" for B, s, f in pairs) + f" (mean difference {diff:+.1f})"
    diff, ev = degrade(paper_heuristic)
    _, ev_all = degrade(is_heuristic)
    out.append(verdict(diff >= 2, "The paper's heuristics degrade with larger blocks (full diffusion below semi-AR at "
                       "equal NFE)", "best of top-k, random, threshold, factor, EB at NFE <= B, BL = %d vs BL = L: "
                       % cfg["semi_bl"] + ev + f"; with PC-Sampler and EOS damping too: {ev_all}."))
    r, b, g = best_gap(semi)
    out.append(verdict(None if g is None else g >= -2, "The policy matches the best heuristic in semi-AR (within 2 points at matched NFE)",
                       f"Best point: {fmt(r, b, g)}."))
    r, b, g = best_gap(full, heuristic=paper_heuristic)
    out.append(verdict(None if g is None else g >= 10, "The policy beats the paper's heuristics in full diffusion (top-k, "
                       "random, threshold, factor, EB; by >= 10 points somewhere)",
                       f"Best point: {fmt(r, b, g)}; against every heuristic, PC-Sampler and EOS damping included: "
                       f"{fmt(*best_gap(full))}."))
    eos_aware = [x for x in full if is_heuristic(x) and group(x) == "eos-aware"]
    if eos_aware:   # the training-free fixes for full diffusion's end-of-text problem (PC-Sampler, EOSER)
        pts = [(x, best_at(eos_aware, x["mean_nfe"])) for x in full if is_learned(x) and x["trained"]["reward"] == "mult"]
        pts = [(x, b, x["accuracy"] - b) for x, b in pts if b is not None]
        r, b, g = max(pts, key=lambda t: t[2]) if pts else (None, None, None)
        out.append(verdict(None if g is None else g > 0, "The learned policy beats the end-of-text-aware heuristics "
                           "in full diffusion (PC-Sampler, EOS damping; at matched NFE somewhere on its front)",
                           f"Best point: {fmt(r, b, g)} (the best of pc / eosdamp only)."))
    band = {mode: [x for x in rows if is_heuristic(x) and family(x) == "band"] for mode, rows in (("semi-AR", semi),
                                                                                                ("full", full))}
    if any(band.values()):   # the strongest hand rule of the tiny world (policy.Band): a line of its own
        ev, held = [], []
        for mode, rows in (("semi-AR", full_by["semi-AR"]), ("full", full_by["full diffusion"])):   # ES policies too
            pts = [(x, best_at(band[mode], x["mean_nfe"])) for x in rows
                   if is_learned(x) and not is_cond(x) and x["trained"]["reward"] == "mult"]
            pts = [(x, b, x["accuracy"] - b) for x, b in pts if b is not None]
            r, b, g = max(pts, key=lambda t: t[2]) if pts else (None, None, None)
            held.append(None if g is None else g > 0)
            ev.append(f"{mode}: {fmt(r, b, g)}")
        out.append(verdict(None if None in held else all(held), "The learned policy beats the band rule (at matched NFE "
                           "somewhere on its front, in semi-AR and in full diffusion)", "Best points: " + "; ".join(ev) + "."))
    for claim, prefix in (("Length transfer holds (trained at L, evaluated at 2L: no worse against heuristics)",
                           "length transfer"),
                          ("Model transfer holds (trained on tiny, evaluated on tiny-b: no worse against heuristics)",
                           "model transfer")):
        ev, held = [], []
        for mode, home in (("semi-AR", semi), ("full", full)):
            away = by[f"{prefix}, {mode}"]
            g0, g1 = best_gap(home, tau=1.0)[2], best_gap(away, tau=1.0)[2]
            held.append(None if None in (g0, g1) else g1 >= g0 - 2)
            ev.append(f"{mode}: best gap {signed(g0)} at home, {signed(g1)} transferred")
        out.append(verdict(agree(*held), claim, "; ".join(ev) + "."))
    ev, held = [], []
    for mode, home in (("semi-AR", semi), ("full", full)):
        g0, g1 = best_gap(home, tau=1.0)[2], best_gap(by[f"domain transfer, {mode}"], tau=1.0)[2]
        held.append(None if None in (g0, g1) else g1 < g0 - 2)
        ev.append(f"{mode}: best gap {signed(g0)} on {cfg['task']}, {signed(g1)} on {cfg['ood_task']}")
    out.append(verdict(agree(*held), "Out of domain the policy degrades (a smaller gap to heuristics than in domain)",
                       "; ".join(ev) + "."))
    a = cfg["additive_alpha"]
    add = [r for r in full if is_learned(r) and r["trained"]["reward"] == "additive" and tau_of(r) == 1.0]
    mult = [r for r in full if is_learned(r) and r["trained"]["reward"] == "mult" and r["trained"]["alpha"] == a
            and tau_of(r) == 1.0]
    if add and mult:
        ad, mu = add[0], mult[0]
        out.append(verdict(ad["accuracy"] <= mu["accuracy"] - 10 and ad["mean_nfe"] <= mu["mean_nfe"],
                           f"The additive reward is gamed (alpha = {a:g}: fast and wrong, >= 10 points below the "
                           f"multiplicative reward)",
                           f"additive {ad['accuracy']:.1f}% @ {ad['mean_nfe']:.2f} NFE, multiplicative "
                           f"{mu['accuracy']:.1f}% @ {mu['mean_nfe']:.2f}."))
    ev, held = [], []
    for mode, rows in (("semi-AR", semi), ("full", full)):
        pol = [r for r in rows if is_learned(r) and r["trained"]["reward"] == "mult"]
        tau1 = [r for r in pol if tau_of(r) == 1.0]
        a3 = [r for r in pol if r["trained"]["alpha"] == 3]
        span = lambda rs: max(r["mean_nfe"] for r in rs) - min(r["mean_nfe"] for r in rs)
        held.append(span(a3) < 0.5 * span(tau1))
        ev.append(f"{mode}: tau in {{{', '.join(f'{t:g}' for t in cfg['taus'])}}} moves alpha=3's NFE over "
                  f"{span(a3):.2f}, the alphas over {span(tau1):.2f}")
    out.append(verdict(agree(*held), "The policy temperature moves the trade-off only a little (less than half "
                       "the NFE range of the alpha sweep)", "; ".join(ev) + "."))
    ev, held = [], []
    for mode, rows in (("semi-AR", semi), ("full", full)):
        tau1 = {r["trained"]["alpha"]: r for r in rows if is_learned(r) and r["trained"]["reward"] == "mult"
                and tau_of(r) == 1.0}
        held.append(tau1[0]["accuracy"] >= max(r["accuracy"] for r in tau1.values()))
        ev.append(f"{mode}: " + ", ".join(f"alpha {a:g} {r['accuracy']:.1f}% @ {r['mean_nfe']:.2f}"
                                         for a, r in sorted(tau1.items())))
    out.append(verdict(agree(*held), "alpha = 0 keeps accuracy highest", "; ".join(ev) + "."))
    ev, held = [], []
    for name, (BL, alpha, reward, log) in sorted(logs.items()):
        head, tail = log[:10], log[-10:]
        m = lambda rs, k: sum(x[k] for x in rs) / len(rs)
        if alpha > 0 and reward == "mult":   # "rises" / "falls": by more than 0.01 reward and 1 NFE, not by noise
            held.append(m(tail, "reward") > m(head, "reward") + 0.01 and m(tail, "nfe") < m(head, "nfe") - 1)
        ev.append(f"{name}: reward {m(head, 'reward'):.3f} -> {m(tail, 'reward'):.3f}, NFE {m(head, 'nfe'):.1f} -> "
                  f"{m(tail, 'nfe'):.1f}")
    out.append(verdict(all(held) if held else None, "GRPO: training reward rises and mean NFE falls for alpha > 0 "
                       "(multiplicative reward; mean of the first 10 steps -> the last 10)",
                       f"In {sum(held)} of {len(held)} such runs. " + "; ".join(ev) + "."))
    return out + cond_verdicts(full_by, cfg, cond_logs or {}, per_logs or {}) + variant_verdicts(full_by, cfg)


def sweep_shape(points):
    """points [(knob, NFE, accuracy)] in knob order -> (NFE span as a ratio max/min, NFE monotone in the knob,
    points dominated by another point of the sweep (as fast or faster and > 0.5 points more accurate))."""
    nfe = [n for _, n, _ in points]
    mono = all(b <= a + 1e-9 for a, b in zip(nfe, nfe[1:])) or all(b >= a - 1e-9 for a, b in zip(nfe, nfe[1:]))
    dom = sum(any(n2 <= n and a2 > a + 0.5 for _, n2, a2 in points) for _, n, a in points)
    return max(nfe) / min(nfe), mono, dom


def variant_verdicts(by, cfg):
    """The appendices' variants against the paper's main policy: expert steering (App. F), DPLS (App. E), beta
    (Fig. 6). Each compares like with like: the same alpha, the same mode, at matched NFE."""
    out, semi, full, L = [], by["semi-AR"], by["full diffusion"], cfg["L"]
    pts = lambda rs: [(r["mean_nfe"], r["accuracy"]) for r in rs]
    per = lambda rows: {r["trained"]["alpha"]: r for r in rows if plain(r) and r["trained"]["reward"] == "mult"
                        and tau_of(r) == 1.0}
    es = {r["trained"]["alpha"]: r for r in full if variant(r) == "es" and tau_of(r) == 1.0}
    base = per(full)
    if es:
        heur = [r for r in full if not is_learned(r)]
        pairs = [(a, es[a], base.get(a)) for a in sorted(es)]
        gain = [(a, e, best_at(list(base.values()), e["mean_nfe"])) for a, e, _ in pairs]
        a_es, a_base = front_area(pts(es.values()), L), front_area(pts(base.values()), L)
        def best_es(heur):   # over every ES row, any tau, as the plain policies' verdict reads their tau sweep
            g = [(r, b, r["accuracy"] - b) for r in full if variant(r) == "es" for b in [best_at(heur, r["mean_nfe"])]
                 if b is not None]
            return max(g, key=lambda t: t[2]) if g else (None, None, None)
        best, best_paper = best_es(heur), best_es([r for r in heur if paper_heuristic(r)])
        matched = [e["accuracy"] - m for _, e, m in gain if m is not None]
        mean = sum(matched) / len(matched) if matched else None
        out.append(verdict(None if mean is None or abs(mean) < 1 else mean > 0,
                           f"Expert steering ({cfg['expert']} at BL {cfg['expert_bl']}) improves full diffusion at "
                           f"matched NFE (each ES point against the best policy without ES within 1.1x its NFE: "
                           f"at least 1 point better on average)",
                           "each ES point against the best policy without ES at matched NFE: " +
                           ", ".join(f"alpha {a:g} {signed(None if m is None else e['accuracy'] - m)}" for a, e, m in gain) +
                           f" (mean {signed(mean)}); per alpha, with ES vs without: " +
                           ", ".join(f"{a:g}: {e['accuracy']:.1f}% @ {e['mean_nfe']:.2f} vs "
                                     + (f"{b['accuracy']:.1f}% @ {b['mean_nfe']:.2f}" if b else "n/a")
                                     for a, e, b in pairs) +
                           f"; front area (mean accuracy over log-NFE budgets) with ES {a_es:.1f}, without {a_base:.1f}"
                           f"; against the heuristics, best ES point {fmt(*best)}."))
        out.append(verdict(None if best_paper[2] is None else best_paper[2] >= 10, "With expert steering the policy "
                           "beats the paper's heuristics in full diffusion (top-k, random, threshold, factor, EB; by >= "
                           "10 points somewhere; App. F is how the paper trains its full-diffusion policies)",
                           f"Best ES point: {fmt(*best_paper)}."))
        out.append(verdict(None if best[2] is None else best[2] >= 10, "With expert steering the policy beats every "
                           "heuristic in full diffusion, PC-Sampler and EOS damping included (by >= 10 points "
                           "somewhere)", f"Best ES point: {fmt(*best)}."))
        span = lambda rs: max(r["mean_nfe"] for r in rs) - min(r["mean_nfe"] for r in rs)
        s_es, s_base = span(es.values()), span(base.values())
        out.append(verdict(s_es < 0.5 * s_base, "With expert steering the alphas collapse onto one policy (the NFE "
                           "spread over alpha less than half of that without ES)",
                           f"NFE over alpha {sorted(es)}: with ES {s_es:.2f} ({', '.join('%.2f' % es[a]['mean_nfe'] for a in sorted(es))}), "
                           f"without {s_base:.2f}."))
    ev, held = [], []
    for mode, rows in (("semi-AR", semi), ("full", full)):
        d = [r for r in rows if variant(r) == "dpls" and tau_of(r) == 1.0]
        b = per(rows).get(cfg["variant_alpha"])
        if not d or not b:
            continue
        d = d[0]
        held.append(abs(d["accuracy"] - b["accuracy"]) <= 2 and abs(d["mean_nfe"] / b["mean_nfe"] - 1) <= 0.15)
        ev.append(f"{mode}, alpha {cfg['variant_alpha']:g}: DPLS {d['accuracy']:.1f}% @ {d['mean_nfe']:.2f} NFE, Bernoulli "
                  f"{b['accuracy']:.1f}% @ {b['mean_nfe']:.2f}")
    if held:
        out.append(verdict(all(held) if all(held) or not any(held) else None, "DPLS ~ Bernoulli (same alpha: accuracy "
                           "within 2 points and mean NFE within 15%)", "; ".join(ev) + "."))
    ev, held = [], []
    for mode, rows in (("semi-AR", semi), ("full", full)):
        a = cfg["variant_alpha"]
        mine = [r for r in rows if plain(r) and r["trained"]["alpha"] == a and r["trained"]["reward"] == "mult"]
        beta = sorted(((option(r, "beta"), r["mean_nfe"], r["accuracy"]) for r in rows
                       if variant(r) == "beta" and r["trained"]["alpha"] == a))
        tau = sorted((tau_of(r), r["mean_nfe"], r["accuracy"]) for r in mine)
        alph = sorted((k, r["mean_nfe"], r["accuracy"]) for k, r in per(rows).items())
        if len(beta) < 2 or len(tau) < 2:
            continue
        sb, st, sa = sweep_shape(beta), sweep_shape(tau), sweep_shape(alph)
        held.append(sb[1] and sb[2] / len(beta) <= st[2] / len(tau) and sb[0] >= st[0])
        show = lambda name, sw, n: (f"{name}: NFE span x{sw[0]:.2f}, {'monotone' if sw[1] else 'not monotone'}, "
                                    f"{sw[2]} of {n} points dominated")
        ev.append(f"{mode}: " + "; ".join([show("beta " + "/".join(f"{k:g}" for k, *_ in beta), sb, len(beta)),
                                           show("tau " + "/".join(f"{k:g}" for k, *_ in tau), st, len(tau)),
                                           show("alpha retrained " + "/".join(f"{k:g}" for k, *_ in alph), sa, len(alph))])
                  + " (beta: " + ", ".join(f"{k:g} {a:.1f}% @ {n:.2f}" for k, n, a in beta) + ")")
    if held:
        out.append(verdict(agree(*held) if len(held) == 2 else held[0], f"beta gives a smoother front than tau (alpha "
                           f"{cfg['variant_alpha']:g}'s policy: NFE monotone in beta, no more dominated points, a wider NFE "
                           f"span; the retrained-alpha sweep shown beside)", " | ".join(ev) + "."))
    return out
