"""Server-side export: text embeddings, ONNX audio encoder, trait heads, bundles.

The device runtime never imports this package.
"""
