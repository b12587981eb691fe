"""The "Human evaluation" section of ``safemix report``: one block per study found in ``RUN_DIR/studies/*.sqlite``.

Convention: a study belongs to a run when its database lies in the run's ``studies/`` folder, which
``safemix annotate serve --studies-dir RUN_DIR/studies ...`` gives. The run's own score files
(``RUN_DIR/scores/``) are matched against the study's answers by model label and prompt id, so the section also
shows how well each automatic scorer agrees with the people; an audit study (``safemix judge audit``) is matched
against its own re-keyed scores (``RUN_DIR/audit/STUDY/scores/``) and adds each refusal scorer's accuracy per stratum.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safemix.annotate.audit_results import audit_folder, read_sampling
from safemix.annotate.stats import stats_tables, study_stats
from safemix.annotate.store import STUDY_SUFFIX, Study
from safemix.errors import InputError
from safemix.metrics import read_scores
from safemix.report.sections import Section, Table
from safemix.run_files import SCORES_DIR

log = logging.getLogger(__name__)

STUDIES_DIR = "studies"


def human_evaluation_section(run_dirs: list[Path]) -> Section | None:
    """The report section for every study in the runs' ``studies/`` folders; None when there is none."""
    found = [(Path(run_dir), path) for run_dir in run_dirs
             for path in sorted((Path(run_dir) / STUDIES_DIR).glob(f"*{STUDY_SUFFIX}"))]
    if not found:
        return None
    paragraphs = ["People judged answers blind (models hidden, answer order randomised per item) in "
                  "'safemix annotate serve'. Rates count every annotator's label; preferences count ties as half."]
    tables: list[Table] = []
    for run_dir, path in found:
        where = f"{run_dir.name}/{path.stem}" if len(run_dirs) > 1 else path.stem
        study = Study(path)
        audit = audit_folder(study, run_dir)
        if audit is None:
            stats = study_stats(study, _run_scores(run_dir))
        else:
            stats = study_stats(study, _run_scores(audit), read_sampling(audit)["strata"])
        n_judged = len({row.model for row in stats.rates if row.n_scored})
        paragraphs.append(f"Study {where}: {stats.n_items} items, models {', '.join(stats.models)}, "
                          f"{len(stats.annotators)} annotator(s)" + ("" if n_judged else "; no judgements yet") + ".")
        if n_judged:
            tables += [Table(t.columns, t.rows, f"{where}: {t.caption}") for t in stats_tables(stats)]
    return Section("Human evaluation", paragraphs, tables)


def _run_scores(folder: Path) -> list[dict[str, Any]]:
    """The score lines under ``FOLDER/scores/`` (a run's, or an audit folder's re-keyed ones)."""
    scores_dir = folder / SCORES_DIR
    if not scores_dir.is_dir():
        return []
    try:
        return read_scores([scores_dir])
    except InputError as err:
        log.warning("human evaluation: not comparing with the run's scorers (%s)", err)
        return []
