#!/usr/bin/env python
"""Train a conditional score model: ``python train.py --config configs/NAME.yaml``.

Runs unchanged under ``torchrun --nproc_per_node K train.py ...`` (DDP). ``--resume`` continues
exactly from ``OUT/checkpoint.safetensors``; ``--export FILE`` writes an inference-only copy.
"""

import argparse
import sys
from pathlib import Path

from pdediff.learning.config import Config


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML or JSON run config")
    p.add_argument("--out", help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    p.add_argument("--overwrite", action="store_true", help="start afresh even if OUT has a checkpoint")
    p.add_argument("--steps", type=int, help="override train.steps")
    p.add_argument("--seconds", type=float, metavar="S",
                   help="a wall-clock budget: time the first steps, then set train.steps to what fits in S "
                        "seconds (for a lease on a machine of unknown speed); not with --resume")
    p.add_argument("--export", metavar="FILE", help="after training, write EMA weights only to FILE")
    p.add_argument("--half", action="store_true", help="store exported weights as float16")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        config = Config.load(args.config)
        if args.steps is not None:
            if args.steps < 1:
                raise ValueError(f"--steps={args.steps}; expected an integer >= 1")
            config.train.steps = args.steps
        if args.resume and args.overwrite:
            raise ValueError("--resume and --overwrite contradict each other; pass one")
        if args.seconds is not None and not 0 < args.seconds < float("inf"):
            raise ValueError(f"--seconds={args.seconds}; expected a number of seconds > 0")
        if args.seconds is not None and args.resume:
            raise ValueError("--seconds sets the schedule of a new run; expected it without --resume")
        if args.half and not args.export:
            raise ValueError("--half applies to --export; pass --export FILE as well")
        config.validate()
        from pdediff.tools.training import CHECKPOINT, Trainer, check_export, export_checkpoint

        out = Path(args.out or Path("runs") / config.name)
        ckpt = out / CHECKPOINT
        if ckpt.exists() and not (args.resume or args.overwrite):
            raise ValueError(f"--out={str(out)!r} already holds a checkpoint; pass --resume or --overwrite")
        if args.export:
            check_export(args.export)
            if Path(args.export).resolve() == ckpt.resolve():
                raise ValueError(f"--export={args.export!r} is the run's own checkpoint; expected another file")
        # checks the config, device, data and any checkpoint to resume, then loads the data
        trainer = Trainer(config, out, resume=args.resume, progress=not args.no_progress)
        if args.overwrite and trainer.rank == 0:
            ckpt.unlink(missing_ok=True)  # only now that the new run is known to start
        if args.seconds is not None:
            trainer.fit_steps_to(args.seconds)
        path = trainer.run()
        if trainer.rank == 0:
            print(f"checkpoint: {path}")
            if args.export:
                print(f"exported: {export_checkpoint(path, args.export, half=args.half, config=config)}")
    except ValueError as exc:
        p.exit(2, f"train.py: error: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
