"""Joint tables of the SMPL body and the joint sets derived from it: the one place for these constants."""

from __future__ import annotations

import numpy as np

# SMPL's 24 joints in kinematic-tree order. The body's left is +x (the body faces +z, y is up).
SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)
SMPL_PARENTS = np.array(
    [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21], dtype=np.int64
)
NUM_SMPL_JOINTS = len(SMPL_JOINT_NAMES)
NUM_BODY_POSE_JOINTS = NUM_SMPL_JOINTS - 1  # body_pose excludes the root: 23 x 3 axis-angle

# SMPL part names (the official vertex segmentation's names), indexed like the joints: part j is the
# region that rotates with joint j.
SMPL_PART_NAMES = (
    "hips", "leftUpLeg", "rightUpLeg", "spine", "leftLeg", "rightLeg", "spine1",
    "leftFoot", "rightFoot", "spine2", "leftToeBase", "rightToeBase", "neck",
    "leftShoulder", "rightShoulder", "head", "leftArm", "rightArm",
    "leftForeArm", "rightForeArm", "leftHand", "rightHand", "leftHandIndex1", "rightHandIndex1",
)

# Extra joints taken directly from surface vertices, in the order smplx's VertexJointSelector
# appends them after the 24 SMPL joints (face, feet, then fingertips).
EXTRA_JOINT_NAMES = (
    "nose", "reye", "leye", "rear", "lear",
    "LBigToe", "LSmallToe", "LHeel", "RBigToe", "RSmallToe", "RHeel",
    "lthumb", "lindex", "lmiddle", "lring", "lpinky",
    "rthumb", "rindex", "rmiddle", "rring", "rpinky",
)

# Human3.6M's 17 joints as regressed from SMPL vertices (the SPIN/PARE convention).
H36M_JOINT_NAMES = (
    "pelvis", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "torso", "neck", "nose", "head_top", "left_shoulder", "left_elbow", "left_wrist",
    "right_shoulder", "right_elbow", "right_wrist",
)


def children_of(parents: np.ndarray) -> list[list[int]]:
    """children[j]: the joints whose parent is j."""
    children: list[list[int]] = [[] for _ in parents]
    for j, p in enumerate(parents):
        if p >= 0:
            children[int(p)].append(j)
    return children
