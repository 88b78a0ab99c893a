"""Tasks: kinds of data (tensor datasets, text classification, token classification) behind one protocol."""
