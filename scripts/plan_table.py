"""The plan table: every paper preset on the target its users would pick, compiled by that
target's own compiler (training.plan --target; requirements-accel-plan.txt), as Markdown.

    python scripts/plan_table.py [--only=244m,1b]

One `python -m training.plan` process per row (each compile is 10-200 CPU-seconds); a row
that does not fit shows the compiler's refusal.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
# preset, target, batch, seq_len, (data, fsdp, tensor), remat; bfloat16 activations and
# matmuls (float32 parameters), as on any accelerator.
ROWS = [
    ("4b", "h100", 8, 2048, (1, 1, 1), "full"),
    ("1b", "v5e-8", 32, 1024, (1, 8, 1), "full"),
    ("8b", "v5p-8", 32, 2048, (1, 4, 1), "full"),
    ("244m", "v5e-8", 32, 1024, (1, 8, 1), "none"),
    ("422m", "v5e-8", 32, 1024, (1, 8, 1), "none"),
    ("68b", "v5p-128", 256, 2048, (1, 64, 1), "full"),
    ("137b", "v5p-128", 256, 2048, (1, 64, 1), "full"),
]


def plan_row(model, target, batch, seq_len, mesh, remat) -> dict:
  command = [sys.executable, "-m", "training.plan", f"--target={target}",
             f"--config.model={model}", f"--config.batch_size={batch}",
             f"--config.seq_len={seq_len}", f"--config.mesh.data={mesh[0]}",
             f"--config.mesh.fsdp={mesh[1]}", f"--config.mesh.tensor={mesh[2]}",
             f"--config.model_overrides.remat={remat}",
             "--config.model_overrides.dtype=bfloat16"]
  done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
  lines = done.stdout.strip().splitlines()
  if not lines:
    raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
  return json.loads(lines[-1])


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", default="", help="comma-separated presets")
  only = set(filter(None, parser.parse_args().only.split(",")))
  print("| preset | target | batch x seq | mesh (d,f,t) | remat | GiB/device | budget GiB | fits "
        "| kernels | roofline MFU | compile s |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  versions = None
  for model, target, batch, seq_len, mesh, remat in ROWS:
    if only and model not in only:
      continue
    r = plan_row(model, target, batch, seq_len, mesh, remat)
    versions = versions or f"jaxlib {r['jaxlib']}, libtpu {r.get('libtpu', '-')}"
    gib = r.get("gib_per_device", r.get("compiler_error", "-"))
    mfu = r.get("roofline", {}).get("mfu_bound", "-")
    print(f"| {model} | {target}{' (estimate)' if r['estimate'] else ''} | {batch} x {seq_len} "
          f"| {mesh} | {remat} | {gib} | {r.get('device_memory_gib')} | {r['fits']} "
          f"| {r['kernels']} | {mfu} | {r.get('compile_s', '-')} |", flush=True)
  print(f"\nCompiled with {versions}.")


if __name__ == "__main__":
  main()
