rule import_onnx:
    """Import a BERT ONNX file shipped by a package into a Hugging Face BertModel, checked against onnxruntime."""
    output:
        expand(
            "{dir}/{file}",
            dir=targets.ONNX_IMPORT,
            file=["config.json", "model.safetensors", "tokenizer.json", "import_report.json"],
        ),
    log:
        "results/logs/import_onnx/{model}.log",
    benchmark:
        "results/benchmarks/import_onnx/{model}.tsv"
    conda:
        "../../envs/layershift.yaml"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        model=model_cfg,
    script:
        "../scripts/import_onnx.py"


rule resolve_model:
    """Find (or download, on the submit host) the pretrained model and record where it lives."""
    input:
        onnx_import_input,
    output:
        targets.PRETRAINED,
    log:
        "results/logs/resolve_model/{model}.log",
    conda:
        "../../envs/layershift.yaml"
    params:
        model=model_cfg,
    script:
        "../scripts/resolve_model.py"
