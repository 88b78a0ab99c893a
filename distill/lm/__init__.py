"""Causal language models: loading teachers, depth-pruned students, corpora and the teacher's top-k logit cache."""
