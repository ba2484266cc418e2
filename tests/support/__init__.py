"""Builders the tests share: tiny models and tokenizers (models), the tiny study and its Snakemake runner
(study), planted vectors (vectors). Imports only layershift and third-party packages, never bench/."""
