"""The fairseq user directory of resmlp-suite, installed with the package.

``--user-dir $(python -m resmlp_suite.translation.plugin)`` registers ``--arch resmlp_seq2seq``,
``resmlp_seq2seq_12`` and ``resmlp_seq2seq_tiny``, lets ``torch.load``'s safe unpickler read fairseq
checkpoints (:mod:`resmlp_suite.translation.safe_load`) and keeps fairseq from dropping the last
batch of a dataset (:mod:`resmlp_suite.translation.batching`).
"""
from resmlp_suite.translation import batching, model  # noqa: F401  (importing them installs the batching fix and registers the model)
from resmlp_suite.translation.safe_load import allow_fairseq_checkpoints

allow_fairseq_checkpoints()
