"""The ablation study of the paper (sec. 4.1, Table 1) as plain data and functions (no Kedro, no MLflow).

Rows of Table 1 and the four trained models behind them::

    row  model  msk. aff. e2e. heu. amx.   inference
    A    A       -    -    -    -    x     argmax of Psi (eq. 1-2), Faster R-CNN boxes only
    B    B       -    x    x    -    x     argmax of P (eq. 3-4), trained with the matching loss (eq. 5)
    C1   C       x    -    -    x    -     heuristic merger of Panoptic FPN [12] on Mask R-CNN outputs
    C2   C       x    -    -    -    x     argmax of Psi (masks pasted into Psi, variant C of Fig. 4)
    D1   D       x    x    x    x    -     heuristic merger on the end-to-end trained model
    D2   D       x    x    x    -    x     argmax of P: the paper's full method

Supplementary rows (optional in a study; :data:`SUPPLEMENTARY_ROWS`), beyond Table 1::

    D2gt Dgt     x    x    x    -    x     D2 trained on GROUND-TRUTH detections (supplementary Table C):
                                           ``train_detections: ground_truth``, predicted detections at test

"C1 and C2, as well as D1 and D2, are identical models using different inference methods" (sec. 4.1): four
trainings (A, B, C, D) and six evaluations. Rows A and C have no matching loss (``train_end_to_end: false``):
their network learns the detector and the semantic head V only (the panoptic head has no parameter without
the affinity head), and at inference Psi is still built from V and the detections and its argmax taken.

Study parameters (``conf/base/parameters_ablation_<dataset>.yml``, key ``ablation_<dataset>``)::

    outputs: {models_dir, predictions_dir, report_dir}   # folders of bundles, predictions, reports
    seeds: [0, 1, 2]      # every model is trained once per seed (a list, or N for 0..N-1; default three)
    confidence: 0.95      # level of the Student-t intervals (optional, default 0.95)
    base: {...}           # a training namespace (schema of unipan_pipeline.experiment.train) WITHOUT
                          # output_dir / trainer.checkpoint_dir / trainer.seed: shared by the trainings
    evaluation: {...}     # an evaluation namespace (schema of unipan_pipeline.experiment.evaluate) WITHOUT
                          # the paths and the registry: shared by the evaluations
    models: {A: {use_masks: false, ...}, ...}            # ModelConfig overrides of base.model per model
    rows: {A: {inference: argmax, panoptic_min_score: 0.5}, C1: {inference: heuristic, heuristic_...}}
                          # each row's inference and EVERY threshold that inference uses
                          # (:data:`ROW_THRESHOLDS`), stated explicitly per row

Resolution (:func:`training_params`, :func:`row_model_config`): model M with seed s is trained with
``ModelConfig(**{**base.model, **models[M]})`` and ``trainer.seed = s`` into ``<models_dir>/<M>/seed<s>/``;
row R is evaluated, for every seed, with ``ModelConfig(**{**base.model, **models[ROW_MODEL[R]], **rows[R]})``
(the row's keys act at inference only: the trained weights are shared). Which row uses which model is the
paper's design (:data:`ROW_MODEL`), not a setting. The Kedro pipelines (``ablation_cityscapes``,
``ablation_coco``: the stage ``pipelines/ablation``) put each row in its own namespace and each model's
training in the namespace of its argmax row (:data:`TRAINING_ROW`); see that package for ``--namespaces``.

Figures are reported like Table 1, in percent, as the mean over the seeds with its Student-t interval
(:func:`mean_interval`). Each claim of the paper is judged from the interval of the PAIRED differences (row X
minus row Y of the same seed, :func:`claims_observed`): ``holds`` (interval above 0), ``reversed`` (below 0)
or ``within noise`` (it contains 0); what is observed is computed from the measurements, never expected by
the code.
"""

from .report import *  # noqa: F403
from .results import *  # noqa: F403
from .study import *  # noqa: F403
