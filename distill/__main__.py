"""``python -m distill``: the command line, so that ``torchrun --nproc-per-node N -m distill run RECIPE`` works."""

from distill.cli import app

app(prog_name="distill")
