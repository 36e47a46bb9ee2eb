"""The closed-loop LIBERO evaluation behind tools/libero/eval.py (its command line and protocol docstring).

Imported with tools/libero on sys.path (eval.py puts it there, after check_env has read MUJOCO_GL):
client (HTTP to the policy server, json-numpy, --spawn), decoders (the --decoders names), episode (one episode of
OpenVLA's run_libero_eval protocol), media (the GIFs), results (the resumable JSONL), report (OUT.json / OUT.md),
schedule (the work order and progress lines).
"""
