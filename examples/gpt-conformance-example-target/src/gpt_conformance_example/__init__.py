"""An example third-party gpt-conformance target: the reference GPT's forward pass in NumPy."""
