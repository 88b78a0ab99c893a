"""Ways to run teachers and students beyond one frozen teacher: chains, module replacement."""

from distill.strategies.chain import ChainStep, run_chain

__all__ = ["ChainStep", "run_chain"]
