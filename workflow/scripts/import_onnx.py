from pathlib import Path

from layershift.core.runtime import script_context
from layershift.models.onnx_import import import_onnx_bert
from layershift.models.sources import onnx_tokenizer_dir, package_file, parse_source

with script_context(snakemake) as sm:
    spec = sm.params.model
    onnx_path = package_file(parse_source(spec["source"]).value, ".onnx")
    tokenizer_dir = onnx_tokenizer_dir(spec)
    report = import_onnx_bert(onnx_path, tokenizer_dir, Path(sm.output[0]).parent)
    print(report)
