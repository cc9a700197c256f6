"""The networks: the Depth-Sequence Transformer (later the calcium segmenter)."""
