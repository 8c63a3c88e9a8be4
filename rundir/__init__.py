"""The run directory's owner: its file names and small files, the workdir lock, the progress
line, the multi-host helpers, the console's log filter and the TensorBoard writer's import.

It sits at the bottom of the project: it imports no other project package and no JAX at
module level (the multi-host helpers import JAX only when a run is multi-process), so scoring a
samples file (eval.py --config.samples_path), the sandbox's command line (python -m
execution) and sweeps/status.py run where JAX is not installed, and every package above may use
it.

Why not `runs`, the name ../shared/DESIGN.md uses for this layer: `runs/` is the default
output directory of train.py and eval.py (runs/CONFIG-RUN), and a package of that name would
be shadowed by, or shadow, a folder of run outputs in the checkout.

    rundir/layout.py        the file names of a run directory, its small files, the
                            checkpoint folder's steps (no orbax: model/run_dir.py loads them)
    rundir/workdir_lock.py  one run per directory (flock)
    rundir/progress.py      the one progress-line format of every long loop
    rundir/multihost.py     jax.distributed setup and the collectives that keep processes
                            in agreement
    rundir/logs.py          keeps library INFO chatter off the console
    rundir/tensorboard.py   tensorboardX for the event files, imported without torch
"""
