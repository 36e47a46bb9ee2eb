"""The decision a user needs from a closed-loop run: does a decoder keep plain decoding's success rate? For each
decoder other than plain, on the (suite, task, init) both ran: the success-rate difference with a 95% interval
(Newcombe's square-and-add interval for paired proportions, built from the two Wilson intervals and the correlation
of the pairs), the paired outcome counts (the same
initial state and fixture placement, so a discordant pair is an episode one decoder won and the other lost),
whether the run shows non-inferiority at a 3-point margin, and how soon the decoder's actions leave plain's."""
import math

from .episode import unpack_tokens

Z95 = 1.959963984540054
MARGIN = 0.03  # the "within 3 points of plain decoding"


def wilson_exact(k, n, z=Z95):
    """Wilson score interval, unrounded; (None, None) for n = 0."""
    if n == 0:
        return None, None
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def newcombe(k_ref, n_ref, k_new, n_new, z=Z95):
    """95% interval for p_new - p_ref (Newcombe 1998, method 10: the hybrid score interval)."""
    if n_ref == 0 or n_new == 0:
        return None, None
    p1, p2 = k_ref / n_ref, k_new / n_new
    l1, u1 = wilson_exact(k_ref, n_ref, z)
    l2, u2 = wilson_exact(k_new, n_new, z)
    d = p2 - p1
    return d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2)


def newcombe_paired(both, new_only, ref_only, neither, z=Z95):
    """95% interval for p_new - p_ref from paired outcomes (Newcombe 1998, Statistics in Medicine 17:2635, method
    10): the unpaired square-and-add interval, less the covariance of the pairs. The correlation of the two outcomes
    enters with a continuity correction (no correction below n/2 of positive association); with no correlation
    the interval equals `newcombe` on the marginal counts. (None, None) for no pairs."""
    n = both + new_only + ref_only + neither
    if n == 0:
        return None, None
    k_new, k_ref = both + new_only, both + ref_only
    p_new, p_ref = k_new / n, k_ref / n
    l_new, u_new = wilson_exact(k_new, n, z)
    l_ref, u_ref = wilson_exact(k_ref, n, z)
    margins = k_new * (n - k_new) * k_ref * (n - k_ref)
    phi = 0.0
    if margins > 0:
        cross = both * neither - new_only * ref_only
        corrected = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
        phi = corrected / math.sqrt(margins)
    d = p_new - p_ref
    below = (p_new - l_new) ** 2 + (u_ref - p_ref) ** 2 - 2 * phi * (p_new - l_new) * (u_ref - p_ref)
    above = (u_new - p_new) ** 2 + (p_ref - l_ref) ** 2 - 2 * phi * (u_new - p_new) * (p_ref - l_ref)
    return d - math.sqrt(max(below, 0.0)), d + math.sqrt(max(above, 0.0))


def first_token_difference(ta, tb):
    """The first step whose action tokens differ over the two episodes' common length (None if none)."""
    return next((i for i in range(min(len(ta), len(tb))) if (ta[i] != tb[i]).any()), None)


def _first_differing_step(a, b):
    """The first step where two results rows' actions differ, a shorter episode differing where it ends."""
    ta, tb = unpack_tokens(a["tokens_z"]), unpack_tokens(b["tokens_z"])
    first = first_token_difference(ta, tb)
    if first is None and len(ta) != len(tb):
        first = min(len(ta), len(tb))
    return first


def versus_plain(rows, name):
    """The paired comparison of decoder `name` with plain (None when no initial state ran both)."""
    pairs = []
    for key, r in sorted(rows.items()):
        if key[-1] != name:
            continue
        p = rows.get(key[:-1] + ("plain",))
        if p is not None:
            pairs.append((p, r))
    if not pairs:
        return None
    n = len(pairs)
    both = sum(p["success"] and r["success"] for p, r in pairs)
    plain_only = sum(p["success"] and not r["success"] for p, r in pairs)
    new_only = sum(r["success"] and not p["success"] for p, r in pairs)
    k_plain, k_new = both + plain_only, both + new_only
    lo, hi = newcombe_paired(both, new_only, plain_only, n - both - plain_only - new_only)
    firsts = [_first_differing_step(p, r) for p, r in pairs]
    diverged = sorted(f for f in firsts if f is not None)
    return {
        "decoder": name, "paired_episodes": n,
        "plain_successes": k_plain, "successes": k_new,
        "both_succeed": both, "plain_only": plain_only, "decoder_only": new_only,
        "both_fail": n - both - plain_only - new_only,
        "difference": round((k_new - k_plain) / n, 4),
        "difference_95": [round(lo, 4), round(hi, 4)],
        "margin": MARGIN,
        "within_margin_shown": lo > -MARGIN,
        "episodes_with_other_actions": len(diverged),
        "median_first_differing_step": diverged[len(diverged) // 2] if diverged else None,
    }


def write_markdown_section(L, comparisons):
    """Appends the 'against plain decoding' section to the markdown lines L."""
    L.append("## Against plain decoding")
    L.append("")
    if not comparisons:
        L.append("Not measured: no initial state ran plain and another decoder.")
        L.append("")
        return
    L.append(f"On the initial states both ran. Difference: this decoder's success rate minus plain's, with "
             f"Newcombe's 95% interval for paired proportions (square-and-add, narrowed by the pairs' "
             f"correlation); 'within {MARGIN * 100:.0f} points shown' means the interval's lower end is above -{MARGIN * 100:.0f} points (non-inferiority at that margin). The pairs share "
             f"the initial state and fixture placement, so the discordant counts say which episodes decoding "
             f"changed. Other actions: episodes whose action tokens differ from plain's anywhere.")
    L.append("")
    L.append("| decoder | pairs | plain successes | successes | plain only | decoder only | difference (95%) | "
             f"within {MARGIN * 100:.0f} points shown | other actions | median first differing step |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for c in comparisons:
        lo, hi = c["difference_95"]
        L.append(f"| {c['decoder']} | {c['paired_episodes']} | {c['plain_successes']} | {c['successes']} | "
                 f"{c['plain_only']} | {c['decoder_only']} | {100 * c['difference']:+.1f} "
                 f"({100 * lo:+.1f} to {100 * hi:+.1f}) points | {'yes' if c['within_margin_shown'] else 'no'} | "
                 f"{c['episodes_with_other_actions']}/{c['paired_episodes']} | "
                 f"{'-' if c['median_first_differing_step'] is None else c['median_first_differing_step']} |")
    L.append("")
