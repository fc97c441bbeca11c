"""Taking a committed version to deployment: ONNX, a provenance statement anchored on chain, a signature.

`onnx_model` turns a torch module into canonical ONNX bytes and checks them with ONNX Runtime;
`provenance` is the in-toto statement (pure); `facts` reads what the chain recorded about a
version; `signing` wraps OpenSSF model-signing's offline key mode; `folder` writes and verifies
an export folder. This room imports core, chain, store and audit; the API and the commands use it.
"""
