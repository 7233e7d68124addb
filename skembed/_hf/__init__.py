"""Hugging Face models, one step per module: model names to folders (:mod:`.resolve`), loading
a folder with the checks on its tokenizer (:mod:`.load`), words to sub-token ids with the
word cache (:mod:`.words`), the forward pass over windows of long documents
(:mod:`.forward`) and the per-document states it returns, packed for files
(:mod:`.doc_state`); :mod:`.network` is the estimator side of it, shared by the token-level
and document-level estimators.

The forward pass returns, per document, every layer's states of its sub-tokens plus the
``[start, end)`` sub-token span of each word; choosing layers and pooling happens in
:mod:`skembed.transformer`.
"""
