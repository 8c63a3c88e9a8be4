"""Hugging Face interop: public checkpoints in, our runs out.

    python -m interop.import_checkpoint --source=HF_DIR --output=runs/NAME
    python -m interop.hf_export --run=runs/NAME --output=HF_DIR

    interop/import_checkpoint.py  a Hugging Face folder -> a run directory (params, model
                                  config, tokenizer, import.json)
    interop/hf_export.py          a run -> a Hugging Face folder (config.json, safetensors)
    interop/hf_families.py        Llama / Mistral / Gemma config.json <-> ModelConfig, and each
                                  of our parameters as a view of one HF tensor
    interop/safetensors_reader.py lazy, zero-copy reading of *.safetensors (bfloat16 too)

It sits above model/ (it builds our models' parameters) and below everything that uses it;
model/ knows nothing of Hugging Face.
"""
