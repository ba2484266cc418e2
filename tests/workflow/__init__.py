"""Whole-study tests: Snakemake DAG runs, SLURM, the browser, sae-lens interop, the benchmark scripts."""
