"""``--user-dir translation/resmlp_mt`` from a checkout: the plugin itself ships inside the package
(``python -m resmlp_suite.translation.plugin`` prints its folder, which works without a checkout)."""
from resmlp_suite.translation.plugin import resmlp_fairseq  # noqa: F401  (registers the model)
