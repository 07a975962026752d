"""fairseq user directory for ResMLP translation: ``--user-dir translation/resmlp_mt``.

Registers ``--arch resmlp_seq2seq``, ``resmlp_seq2seq_12`` and ``resmlp_seq2seq_tiny`` and lets
``torch.load``'s safe unpickler read fairseq checkpoints (see :mod:`resmlp_suite.translation.safe_load`),
and keeps fairseq from dropping the last batch of a dataset (:mod:`resmlp_suite.translation.batching`).
"""
from resmlp_suite.translation import batching, model  # noqa: F401  (importing them installs the batching fix and registers the model)
from resmlp_suite.translation.safe_load import allow_fairseq_checkpoints

allow_fairseq_checkpoints()
