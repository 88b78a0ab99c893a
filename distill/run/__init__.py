"""Run recipes: the recipe schema, the runner that executes one, its results and measurements."""
