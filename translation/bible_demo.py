"""Offline De->En demo on the Bible: ResMLP vs an equal-size transformer (see resmlp_suite.translation.demo).

    python translation/bible_demo.py            # full run, ~29 min on 2 CPU cores
    python translation/bible_demo.py --quick    # pipeline check, a few minutes
"""
from resmlp_suite.cli import user_errors
from resmlp_suite.translation.demo import main

if __name__ == "__main__":
    with user_errors():
        main()
