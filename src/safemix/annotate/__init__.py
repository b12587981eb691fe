"""Human evaluation: blind side-by-side annotation of model answers in a local web app, and its analysis.

- ``inputs``: read two or more generations files (or directories) with the same prompt ids, and name their models;
- ``sampling``: the seeded, suite-stratified sample of prompts and the blinded order of answers per item;
- ``store``: the study database (SQLite, ``studies/NAME.sqlite``): items, hidden mapping, judgements;
- ``server``: the Flask app annotators use (``safemix annotate serve``);
- ``export`` and ``stats``: unblinded CSV / JSONL, rates, preferences, agreement between people and with scorers;
- ``report``: the "Human evaluation" section of ``safemix report`` for studies kept in ``RUN_DIR/studies/``.

Nothing here imports torch.
"""
