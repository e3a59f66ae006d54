"""Asset keys and code versions: each named once, here.

`deps=[...]`, the versioned entry point's inputs, the runner, the schedule and the tests use
these keys rather than string literals.  A code version is part of every stamp its asset
writes: bump it when a change to the code changes what the asset writes, and every partition
of it (and whatever reads it, through the data versions) is recomputed once.
"""

import dagster as dg

OPENSIM_MODEL = dg.AssetKey("opensim_model")
RAW_SUBJECT = dg.AssetKey("raw_subject")
MOCAP_MARKERS = dg.AssetKey("mocap_markers")
OPENSIM_GT = dg.AssetKey("opensim_gt")
FRAMES = dg.AssetKey("frames")
FRAME_MODEL = dg.AssetKey("frame_model")
SEQUENCE_MODEL = dg.AssetKey("sequence_model")
# one test subject's scores (sums over its frames), per view and condition: what evaluation adds up
SUBJECT_EVALUATION = dg.AssetKey("subject_evaluation")
EVALUATION = dg.AssetKey("evaluation")
ROBUSTNESS_REPORT = dg.AssetKey("robustness_report")
# the robustness study's control: both models trained with the `current` augmentation policy, scored
CURRENT_POLICY_EVALUATION = dg.AssetKey("current_policy_evaluation")

# the backbone study: the frame model per backbone (partitioned by backbone), and their comparison
BACKBONE_STUDY = dg.AssetKey("backbone_study")
BACKBONE_COMPARISON = dg.AssetKey("backbone_comparison")

# Not part of the main job (`d3ke demo`, the stale-subjects schedule): materialized on request.
STUDY_ASSETS = (CURRENT_POLICY_EVALUATION, BACKBONE_STUDY, BACKBONE_COMPARISON)

# Partitioned by subject: one output folder per subject partition.
SUBJECT_ASSETS = (RAW_SUBJECT, MOCAP_MARKERS, OPENSIM_GT, FRAMES)
# Partitioned by subject too, but materialized for the test subjects only (the runner, the schedule
# and the sensor leave the other partitions alone; the asset refuses them).
TEST_SUBJECT_ASSETS = (SUBJECT_EVALUATION,)
PARTITIONED_ASSETS = SUBJECT_ASSETS + TEST_SUBJECT_ASSETS

CODE_VERSIONS: dict[dg.AssetKey, str] = {
    OPENSIM_MODEL: "2",  # the generic model build_model writes
    RAW_SUBJECT: "raw1-gen2",  # the synthetic generator's output (movi: only the manifest)
    MOCAP_MARKERS: "1",
    OPENSIM_GT: "1",  # scaling, IK and labels; also part of the scale and trial stamps
    FRAMES: "2",
    FRAME_MODEL: "4",  # bump when training changes what it learns; 3: augmentation policies; 4: robust's odds
    SEQUENCE_MODEL: "3",  # 2: the checkpoint carries the frame model it refines; 3: augmented passes
    SUBJECT_EVALUATION: "2",  # 2: the scale error summed per frame over bodies and axes
    EVALUATION: "3",  # 2: the claim reuses the clean frames' outputs; 3: the sum of subject_evaluation
    ROBUSTNESS_REPORT: "2",  # 2: both augmentation policies side by side when the control is materialized
    CURRENT_POLICY_EVALUATION: "1",
    BACKBONE_STUDY: "1",
    BACKBONE_COMPARISON: "1",
}


def folder_name(key: dg.AssetKey) -> str:
    """The asset's folder under the data root."""
    return key.to_user_string()
