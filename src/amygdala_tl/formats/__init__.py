"""Serving formats: the vLLM readout (readout.py) and llama.cpp / repeng control vectors (gguf.py)."""
