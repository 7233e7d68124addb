"""The side of an estimator that runs a Hugging Face model (:class:`HFNetwork`): shared by the
token-level :class:`~skembed.TransformerEmbeddings` and the document-level
:class:`~skembed.TransformerDocumentEmbeddings`."""

from __future__ import annotations

from ..resolve import file_signature
from .doc_state import pack_states, unpack_states
from .forward import forward_documents
from .load import load_hf
from .resolve import resolve_model
from .words import prime_words, word_ids


class HFNetwork:
    """Model loading and the forward pass of a Hugging Face model, shared by the token-level
    (:class:`~skembed.TransformerEmbeddings`) and document-level
    (:class:`~skembed.TransformerDocumentEmbeddings`) estimators."""

    _shares_states = True

    def _model_name(self):
        return self.model

    def _model_key(self):
        path = resolve_model(self._model_name())
        return ("hf", path, file_signature(path))  # files rewritten in place: a new model

    def _load_model(self, device):
        return load_hf(self._model_key()[1], device)

    def _forward(self, model, docs, batch_size):
        # Windows per forward pass: batch_size, or less while retrying after out-of-memory.
        return forward_documents(model, docs, batch_size)

    def _pack_states(self, states):
        return pack_states(states)

    def _unpack_states(self, tensors):
        return unpack_states(tensors, self._device)

    def _doc_costs(self, model, docs):
        # Batches sorted by sub-tokens, the length the model sees, waste less on padding than
        # batches sorted by characters. The documents' new words are tokenized first, in a
        # few large calls; only documents that may run through the network get here.
        prime_words(model, docs)
        return [self._n_subtokens(model, doc) for doc in docs]

    @staticmethod
    def _n_subtokens(hf, doc) -> int:
        try:
            return hf.word_ids.n_subtokens(doc)
        except KeyError:  # dropped from the bounded word cache since
            return sum(map(len, word_ids(hf, doc)))
