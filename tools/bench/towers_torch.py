"""Time OpenVLA's fused vision towers (DINOv2 ViT-L/14-reg4 + SigLIP so400m/14, 224 px) in PyTorch.

This is the side-by-side baseline for `cargo bench --bench verifier` (full_size_towers): the same
towers OpenVLA builds through timm, random weights, second-to-last block, one frame, on this CPU.

    tools/.venv/bin/python tools/bench/towers_torch.py [--dtype f32|bf16] [--iters N]
"""
import argparse
import time

import timm
import torch


def build(name: str) -> torch.nn.Module:
    model = timm.create_model(name, pretrained=False, num_classes=0, img_size=224)
    # OpenVLA's featurizer returns the output of the second-to-last block.
    model.forward = lambda x, m=model: m.get_intermediate_layers(x, n={len(m.blocks) - 2})[0]
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    parser.add_argument("--iters", type=int, default=5)
    args = parser.parse_args()
    dtype = torch.float32 if args.dtype == "f32" else torch.bfloat16
    torch.manual_seed(0)
    dino = build("vit_large_patch14_reg4_dinov2.lvd142m").to(dtype)
    siglip = build("vit_so400m_patch14_siglip_224").to(dtype)
    pixels = torch.randn(1, 6, 224, 224, dtype=dtype)
    with torch.inference_mode():
        def frame():
            a = dino(pixels[:, :3])
            b = siglip(pixels[:, 3:])
            return torch.cat([a, b], dim=2)

        out = frame()
        times = []
        for _ in range(args.iters):
            start = time.perf_counter()
            frame()
            times.append(time.perf_counter() - start)
    times.sort()
    print(f"torch {torch.__version__} threads={torch.get_num_threads()} dtype={args.dtype} "
          f"features={tuple(out.shape)} median={times[len(times) // 2]:.3f}s min={times[0]:.3f}s")


if __name__ == "__main__":
    main()
