from layershift.core.runtime import script_context
from layershift.data.prepare import PrepareConfig, prepare_dataset
from layershift.study.schema import from_section

with script_context(snakemake, offline=False) as sm:
    ds, data = sm.params.dataset, sm.params.data
    prepare_dataset(
        source=ds["source"],
        text=ds["text"],
        label=ds["label"],
        out_dir=sm.output.card.rsplit("/", 1)[0],
        cfg=from_section(
            PrepareConfig,
            data,
            seed=sm.params.seed,
            max_rows=ds.get("max_rows", data["max_rows"]),
            cleaning=ds.get("cleaning", "paper"),
            min_quality=ds.get("min_quality"),
        ),
        name=sm.wildcards.dataset,
        keep_labels=ds.get("keep_labels"),
        hub_config=ds.get("hub_config"),
        hub_split=ds.get("hub_split", "train"),
        encoding_errors=ds.get("encoding_errors", "strict"),
    )
