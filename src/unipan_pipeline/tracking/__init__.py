"""Experiment tracking: everything that talks to MLflow lives in this package.

* :mod:`.tracker` -- what the experiment glue needs (:class:`Tracker`, :class:`RunLogger`), no MLflow;
* :mod:`.store` -- the SQLite store, artifact folders, experiments;
* :mod:`.params` -- parameters flattened and rendered as MLflow stores them;
* :mod:`.runs` -- the MLflow run logger (parameters, metrics, tags, artifacts, pictures), the run a training
  logs into, a study's parent / child runs, :class:`~.runs.MlflowTracker`;
* :mod:`.models` / :mod:`.pyfunc` -- the trained network as an ``mlflow.pyfunc`` model;
* :mod:`.registry` -- registered models ``unipan-<dataset>`` and the ``champion`` alias;
* :mod:`.fake` -- an in-memory tracker for tests.

``training/`` and ``model/`` never import this package: the training loop only sees a ``log_metrics`` sink.
Importing this package itself does not import MLflow; its MLflow modules do. The ablation study
(:mod:`unipan_pipeline.experiment.ablation`) opens its parent / child runs through ``Tracker.study_run`` /
``Tracker.child_run`` and logs its report with the logger's ``log_text`` / ``log_dict``.
"""

from __future__ import annotations

from unipan_pipeline.tracking.tracker import PromotionResult, RunLogger, Tracker, current_tracker, use_tracker

__all__ = ["PromotionResult", "RunLogger", "Tracker", "current_tracker", "use_tracker"]
