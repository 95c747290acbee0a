"""Shared pure building blocks: pre-LN transformer pieces (attention with explicit masks, 2-D RoPE,
key/value caches for incremental decoding) that method packages compose."""
