"""Analyses of trained models: error patterns, linear probes and block deletion.

`options` holds the spec-side options models (no torch-heavy imports, so spec validation stays
light); `predictions`, `probes` and `ablation` register per-run kinds with benchsuite.runner.analyses,
`errors` registers the family kind with benchsuite.runner.family. Those registries import these
modules, so nothing is imported here.
"""
