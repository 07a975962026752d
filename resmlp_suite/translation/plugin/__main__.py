"""Print the fairseq ``--user-dir`` of the installed package."""
from . import USER_DIR

print(USER_DIR)
