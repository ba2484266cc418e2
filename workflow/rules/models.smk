def onnx_import_input(wildcards):
    """The imported BertModel for onnx-package sources; nothing for the other kinds."""
    if config["models"][wildcards.model]["source"].startswith("onnx-package:"):
        return f"{T.ONNX_IMPORT.format(model=wildcards.model)}/model.safetensors"
    return []


rule import_onnx:
    """Import a BERT ONNX file shipped by a package into a Hugging Face BertModel, checked against onnxruntime."""
    output:
        expand(
            "{dir}/{file}",
            dir=T.ONNX_IMPORT,
            file=["config.json", "model.safetensors", "tokenizer.json", "import_report.json"],
        ),
    params:
        model=model_cfg,
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=20,
    log:
        "results/logs/import_onnx/{model}.log",
    benchmark:
        "results/benchmarks/import_onnx/{model}.tsv"
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/import_onnx.py"


rule resolve_model:
    """Find (or download, on the submit host) the pretrained model and record where it lives."""
    input:
        onnx_import_input,
    output:
        T.PRETRAINED,
    params:
        model=model_cfg,
    log:
        "results/logs/resolve_model/{model}.log",
    conda:
        "../../envs/layershift.yaml"
    script:
        "../scripts/resolve_model.py"
