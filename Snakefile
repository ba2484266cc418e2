# layershift: how fine-tuning changes a transformer, layer by layer.
# `snakemake --cores N` runs the study in config.yaml; `--configfile configs/paper.yaml` runs the paper's.
from snakemake.utils import min_version

min_version("8.20")


# The default study, unless --configfile names another study (configs are not merged into it).
if not workflow.config_settings.configfiles:

    configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/similarity.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/diff.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(config),
