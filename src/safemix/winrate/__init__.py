"""Pairwise win rate (AlpacaEval-style): a judge compares two models' answers to the same general instructions.

``safemix winrate`` compares two generations files or directories; :func:`safemix.winrate.stage.run_winrate_stage`
compares every model of a run with the reference model. No torch is imported here.
"""
