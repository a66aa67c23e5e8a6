"""Reading untrusted checkpoints, writing safetensors, atomic outputs, hashes."""
