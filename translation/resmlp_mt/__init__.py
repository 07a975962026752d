"""fairseq user directory for ResMLP translation: ``--user-dir translation/resmlp_mt``.

Registers ``--arch resmlp_seq2seq``, ``resmlp_seq2seq_12`` and ``resmlp_seq2seq_tiny`` and lets
``torch.load``'s safe unpickler read fairseq checkpoints (see :mod:`resmlp_suite.translation.safe_load`).
"""
from resmlp_suite.translation import model  # noqa: F401  (registers the model and its architectures)
from resmlp_suite.translation.safe_load import allow_fairseq_checkpoints

allow_fairseq_checkpoints()
