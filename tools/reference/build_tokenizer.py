#!/usr/bin/env python3
"""Train a small SentencePiece-style BPE tokenizer that follows the OpenVLA/Llama-2 id convention.

Layout of the produced tokenizer (mirrors `openvla/openvla-7b`, whose tokenizer is Llama-2's 32000
SentencePiece pieces plus an added `<PAD>` at 32000):

    id 0            <unk>      (special; the BPE model's unk token)
    id 1            <s>        (special; BOS, added at the start by the post-processor)
    id 2            </s>       (special; EOS, never added automatically)
    [ids 3..258     <0x00>..<0xFF>  only with byte_fallback=True ]
    ...             learned pieces (Metaspace style: words start with "▁"; a standalone "▁" exists)
    ids V-256..V-1  the 256 action tokens  <act_000> .. <act_255>  (ordinary vocabulary entries
                    that no merge can produce, like the rarely used pieces that OpenVLA recycles)
    id V            <PAD>      (added special token, outside the base vocabulary)

so `tokenizer.get_vocab_size(with_added_tokens=False) == V` and `... (True) == V + 1`.  The model
that uses it has `text_config.vocab_size = V + 64` (OpenVLA's pad_to_multiple_of) and decodes
action bin b (1..=256) from token id `V - b`.

Usage as a library:

    from build_tokenizer import build_tokenizer, openvla_prompt
    tok, V = build_tokenizer([openvla_prompt(i) for i in instructions], merges_vocab_size=160)
    tok.save("tokenizer.json")

CLI:

    python build_tokenizer.py --manifest /work/shared/libero_frames/manifest.json \
        --vocab-size 160 --out tokenizer.json

Training is deterministic for a fixed list of texts and parameters (the HF BPE trainer breaks
ties by pair order), and the result is checked: every training text must encode without `<unk>`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Iterable, Sequence

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<PAD>"
META = "\u2581"  # "▁", SentencePiece's word-boundary marker
N_ACTION_TOKENS = 256


def openvla_prompt(instruction: str) -> str:
    """OpenVLA's inference prompt (openvla_utils.get_vla_action / predict_action callers)."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


def action_token(i: int) -> str:
    return f"<act_{i:03d}>"


def build_tokenizer(
    texts: Iterable[str],
    merges_vocab_size: int = 160,
    n_action_tokens: int = N_ACTION_TOKENS,
    byte_fallback: bool = False,
    check: bool = True,
) -> tuple[Tokenizer, int]:
    """Train the tokenizer on `texts` and return `(tokenizer, V)`.

    merges_vocab_size: target size of the trained part (specials + alphabet + merges, before the
        byte tokens and action tokens are added). The trainer may stop below it when the texts
        allow no more merges. Small values give longer token sequences (more realistic for tests).
    n_action_tokens: number of action tokens appended at the end of the base vocabulary (256 for
        OpenVLA; the ids V-n..V-1).
    byte_fallback: add the 256 `<0xNN>` pieces right after the specials (as Llama-2 does) and turn
        on BPE byte fallback, so no input ever maps to `<unk>`. Off by default (the texts here are
        plain ASCII and `<unk>` is enough).
    check: assert the invariants (ids of specials, action block, `<PAD>` = V, a standalone "▁",
        no `<unk>` on any training text).
    """
    texts = list(texts)
    if not texts:
        raise ValueError("no training texts")

    # 1. Train a plain BPE with Metaspace pre-tokenization (SentencePiece style: spaces become
    #    "▁" and a "▁" is prepended to the text, so "In:" -> "▁In:").
    tok = Tokenizer(models.BPE(unk_token=UNK))
    metaspace_kwargs = dict(replacement=META, prepend_scheme="always", split=True)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace_kwargs)
    trainer = trainers.BpeTrainer(
        vocab_size=merges_vocab_size,
        min_frequency=1,
        special_tokens=[UNK, BOS, EOS],
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)

    # 2. Rebuild the model with its final vocabulary: specials, [bytes], learned pieces, actions.
    state = json.loads(tok.to_str())
    learned = sorted(state["model"]["vocab"].items(), key=lambda kv: kv[1])
    assert [p for p, _ in learned[:3]] == [UNK, BOS, EOS], learned[:3]
    pieces = [UNK, BOS, EOS]
    if byte_fallback:
        pieces += [f"<0x{b:02X}>" for b in range(256)]
    pieces += [p for p, _ in learned[3:]]
    pieces += [action_token(i) for i in range(n_action_tokens)]
    if len(set(pieces)) != len(pieces):
        raise ValueError("duplicate pieces (an action token name collides with a learned piece)")
    vocab = {p: i for i, p in enumerate(pieces)}
    V = len(pieces)
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]

    model = models.BPE(vocab=vocab, merges=merges, unk_token=UNK, fuse_unk=True, byte_fallback=byte_fallback)
    out = Tokenizer(model)
    out.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace_kwargs)
    if byte_fallback:
        # Llama-2's decoder: "▁" -> " ", bytes -> text, fuse, drop the one leading space
        out.decoder = decoders.Sequence(
            [decoders.Replace(META, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
    else:
        out.decoder = decoders.Metaspace(**metaspace_kwargs)
    # Specials already in the vocab keep their ids; <PAD> is new and lands at id V.
    out.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (UNK, BOS, EOS)])
    out.add_special_tokens([AddedToken(PAD, special=True, normalized=False)])
    out.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, vocab[BOS])],
    )

    if check:
        check_tokenizer(out, V, texts, n_action_tokens)
    return out, V


def check_tokenizer(tok: Tokenizer, V: int, texts: Sequence[str] = (), n_action_tokens: int = N_ACTION_TOKENS) -> None:
    """Assert the OpenVLA id convention; raise AssertionError on the first violation."""
    assert tok.token_to_id(UNK) == 0 and tok.token_to_id(BOS) == 1 and tok.token_to_id(EOS) == 2
    assert tok.token_to_id(PAD) == V, (tok.token_to_id(PAD), V)
    assert tok.get_vocab_size(with_added_tokens=False) == V
    assert tok.get_vocab_size(with_added_tokens=True) == V + 1
    for i in range(n_action_tokens):
        assert tok.token_to_id(action_token(i)) == V - n_action_tokens + i
    assert tok.token_to_id(META) is not None, "no standalone '▁' token"
    for t in texts:
        enc = tok.encode(t)
        assert enc.ids[0] == 1, "BOS not added"
        assert 0 not in enc.ids, f"<unk> in encoding of {t!r}: {enc.tokens}"
        assert tok.decode(enc.ids, skip_special_tokens=True) == t, (tok.decode(enc.ids), t)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--manifest", help="LIBERO frames manifest.json (uses each entry's 'instruction')")
    ap.add_argument("--instructions", help="text file, one instruction per line")
    ap.add_argument("--vocab-size", type=int, default=160, help="trained part size (default 160)")
    ap.add_argument("--byte-fallback", action="store_true")
    ap.add_argument("--out", required=True, help="output tokenizer.json")
    args = ap.parse_args(argv)

    instructions: list[str] = []
    if args.manifest:
        with open(args.manifest) as f:
            instructions += [e["instruction"] for e in json.load(f)]
    if args.instructions:
        with open(args.instructions) as f:
            instructions += [l.strip() for l in f if l.strip()]
    if not instructions:
        ap.error("give --manifest and/or --instructions")
    # de-duplicate, keep order (training is order-sensitive only through ties)
    instructions = list(dict.fromkeys(instructions))
    prompts = [openvla_prompt(i) for i in instructions]
    tok, V = build_tokenizer(prompts, merges_vocab_size=args.vocab_size, byte_fallback=args.byte_fallback)
    tok.save(args.out)
    lens = [len(tok.encode(p).ids) for p in prompts]
    print(f"wrote {args.out}: V={V} (+<PAD>={V}), '▁'={tok.token_to_id(META)}, "
          f"{len(prompts)} prompts, ids per prompt {min(lens)}..{max(lens)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
