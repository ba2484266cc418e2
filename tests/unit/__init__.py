"""Fast library tests: no Snakemake DAG run, no SLURM, browser or sae-lens (`make test-fast`)."""
