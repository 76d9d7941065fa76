"""Example third-party gpt-conformance targets: the reference GPT's forward pass in NumPy (``targets``), and nanochat's (``nanochat``)."""
