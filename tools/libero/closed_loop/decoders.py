"""Decoder names of eval.py's --decoders -> the request's `decoder` field and the report's config fields."""
import re


def parse_decoder(name, drafter_config=None):
    """A decoder name -> (the request's `decoder` field, config fields for the report).

    plain | strict | relaxedR ({"relaxed": R}, the server's drafter and --exempt-gripper setting) |
    relaxedRg (radius R, gripper never relaxed) | relaxedRe (radius R, the EAGLE draft head alone: Spec-VLA's
    own setting) | relaxedRp (the previous action's tokens alone as the draft) | relaxedRv (the action takes the
    verifier's own token where a relaxed draft was accepted: "emit": "verifier") | the suffixes combined in the
    order e or p, v, g (relaxed9evg, relaxed9pv) | relaxedR0-R1-...-R6 (one radius per dimension). All but plain,
    strict and relaxedR are sent as {"speculation": {...}}, with the server's drafter (from /info) unless the
    name picks one (e, p)."""
    if name == "plain":
        return "plain", {"decoder": "ar", "policy": None, "r": None, "radius": None, "exempt_dims": []}
    if name == "strict":
        return "strict", {"decoder": "spec", "policy": "strict", "r": None, "radius": None, "exempt_dims": []}
    m = re.fullmatch(r"relaxed(\d+)([ep]?)(v?)(g?)", name)
    if m:
        r, own, verifier, g = int(m.group(1)), m.group(2), bool(m.group(3)), bool(m.group(4))
        cfg = {"decoder": "spec", "policy": "relaxed", "r": r, "radius": r, "exempt_dims": [6] if g else []}
        if not (own or verifier or g):
            return {"relaxed": r}, cfg
        drafter = {"e": "eagle", "p": "previous_action"}.get(own)
        if drafter:
            cfg["drafter"] = drafter
        if verifier:
            cfg["emit"] = "verifier"
        field = _speculation({"uniform": r}, [6] if g else [], {"drafter": drafter} if drafter else drafter_config)
        if verifier:
            field["speculation"]["emit"] = "verifier"
        return field, cfg
    m = re.fullmatch(r"relaxed(\d+(?:-\d+){6})", name)
    if m:
        radii = [int(x) for x in m.group(1).split("-")]
        cfg = {"decoder": "spec", "policy": "relaxed", "r": max(radii), "radius": radii, "exempt_dims": []}
        return _speculation({"per_dimension": radii}, [], drafter_config), cfg
    raise ValueError(f"unknown decoder {name!r}: expected plain, strict, relaxedR, relaxedRg (gripper exempt), "
                     f"relaxedRe (EAGLE head alone), relaxedRp (previous action alone), relaxedRv (verifier's token emitted), relaxedRevg or relaxedR0-R1-R2-R3-R4-R5-R6 (per dimension)")


def _speculation(radius, exempt, drafter_config):
    spec = {"radius": radius, "exempt_dims": exempt}
    if drafter_config is not None:
        spec["drafter"] = drafter_config
    return {"speculation": spec}
