"""Compressed-model artefacts: what ``cetopt apply PLAN --model SPEC --out DIR`` writes and ``cetopt evaluate
DIR`` reads back.

DIR holds
- ``model.safetensors``: each planned layer's packed integer codes and float32 scales (offsets, low-rank
  factors, series terms; cetopt.quant.pack), every other parameter and buffer as it was, concatenated per
  dtype (:func:`bundle`: a small header); the index and the layout of the packed parts in its metadata;
- ``plan.json``: the plan (cetopt.plan/2);
- ``manifest.json``: format, model target, fingerprints (SHA-256 of the source weights, of the plan and of
  model.safetensors), the predicted packed size next to the file's bytes (codes, scales, other parameters,
  container overhead), the activation quantisation and the BOPs it implies, cetopt and torch versions.

With ``activation_bits`` (``cetopt apply --activation-bits 8``) the input of every planned layer but embeddings
gets a static per-tensor grid calibrated on the spec's calibration batches through the unpacked weights
(cetopt.quant.activations); the grids are in model.safetensors' metadata (``activations``), summarised in
the manifest, and :func:`evaluate_artifact` runs the model with those inputs fake-quantised.

docs/artifact-format.md specifies the layout well enough to read it without cetopt.

:func:`load_compressed` unpacks DIR into a copy of the spec's model, after checking every manifest field,
both files' SHA-256 and sizes, and that the stored data are what plan.json gives on the source model
(re-derived); :func:`evaluate_artifact` measures it through cetopt.measure. DIR is built in a staging
folder beside it and swapped in whole (cetopt._atomic.staged_dir). The model is never taken from the
manifest's ``target``: that is shown and compared (cetopt.modelspec.choose_model).
"""

from cetopt.artifact.files import (ARTIFACT_FILES, ARTIFACT_FORMAT, MANIFEST_FIELDS, MANIFEST_FILE, PLAN_FILE,
                                   WEIGHTS_FILE, ArtifactInfo, bundle, file_sha256, model_target, read_manifest,
                                   read_packed, state_fingerprint, unbundle)
from cetopt.artifact.load import ACTIVATION_RTOL, CompressedModel, evaluate_artifact, load_compressed
from cetopt.artifact.write import artifact_bops, check_plan_fingerprint, plan_grams, plan_quadrics, write_artifact

__all__ = ["ACTIVATION_RTOL", "ARTIFACT_FILES", "ARTIFACT_FORMAT", "ArtifactInfo", "CompressedModel", "MANIFEST_FIELDS",
           "MANIFEST_FILE", "PLAN_FILE", "WEIGHTS_FILE", "artifact_bops", "bundle", "check_plan_fingerprint",
           "evaluate_artifact", "file_sha256", "load_compressed", "model_target", "plan_grams", "plan_quadrics",
           "read_manifest", "read_packed", "state_fingerprint", "unbundle", "write_artifact"]
