# layershift: how fine-tuning changes a transformer, layer by layer.
# `snakemake --cores N` runs the study in config.yaml; `--configfile configs/paper.yaml` runs the paper's.
from snakemake.utils import min_version

min_version("8.20")


# The default study, unless --configfile names another study (configs are not merged into it).
if not workflow.config_settings.configfiles:
    import sys

    sys.path.insert(0, f"{workflow.basedir}/src")
    from layershift.study.schema import exit_on_bad_yaml

    exit_on_bad_yaml("config.yaml")  # one line with the line number, before Snakemake's own parser

    configfile: "config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    model=_choice(MODELS),
    dataset=_choice(DATASETS),
    stage=targets.RUN_PATTERN,  # a run: pretrained, or one fine-tuning replicate (finetuned-s<seed>)
    reference=targets.RUN_PATTERN,
    compared=targets.FINETUNED_RUN_PATTERN,
    index=r"\d+",
    split="train|validation|test",
    layer=r"\d+",
    seed=r"\d+",
    measure="|".join(targets.SIMILARITY_MEASURES),


# Hub downloads and data preparation run on the submit host (compute nodes are often offline).
localrules:
    prepare,
    resolve_model,


include: "workflow/rules/data.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/activations.smk"
include: "workflow/rules/similarity.smk"
include: "workflow/rules/sae.smk"
include: "workflow/rules/crosscoder.smk"


include: "workflow/rules/diff.smk"
include: "workflow/rules/verdict_curve.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        all_targets(config),
