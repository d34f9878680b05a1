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
SMPL_POSE_SIZE = 3 * NUM_SMPL_JOINTS  # 72: axis-angle of every joint, root first
BODY_POSE_SIZE = 3 * NUM_BODY_POSE_JOINTS  # 69
NUM_BETAS = 10  # shape coefficients of the SPIN/EFT annotation format and of the regressors

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


# SPIN's 9 joints regressed from vertices (rows of J_regressor_extra.npy), appended after smplx's
# 45 joints (24 SMPL + 21 EXTRA_JOINT_NAMES), so that a joint source index runs over 54 joints.
SPIN_EXTRA_JOINT_NAMES = (
    "lsp_right_hip", "lsp_left_hip", "lsp_neck", "lsp_head_top", "mpii_pelvis", "mpii_thorax",
    "h36m_spine", "h36m_jaw", "h36m_head",
)

# The 49 joints of SPIN/EFT/PARE annotations: 25 OpenPose BODY_25 joints (the `openpose` array), then
# 24 ground-truth joints (the `part` and `S` arrays). Each with its source index among the 54 joints.
JOINTS49 = (
    ("OP Nose", 24), ("OP Neck", 12), ("OP RShoulder", 17), ("OP RElbow", 19), ("OP RWrist", 21),
    ("OP LShoulder", 16), ("OP LElbow", 18), ("OP LWrist", 20), ("OP MidHip", 0), ("OP RHip", 2),
    ("OP RKnee", 5), ("OP RAnkle", 8), ("OP LHip", 1), ("OP LKnee", 4), ("OP LAnkle", 7),
    ("OP REye", 25), ("OP LEye", 26), ("OP REar", 27), ("OP LEar", 28), ("OP LBigToe", 29),
    ("OP LSmallToe", 30), ("OP LHeel", 31), ("OP RBigToe", 32), ("OP RSmallToe", 33), ("OP RHeel", 34),
    ("Right Ankle", 8), ("Right Knee", 5), ("Right Hip", 45), ("Left Hip", 46), ("Left Knee", 4),
    ("Left Ankle", 7), ("Right Wrist", 21), ("Right Elbow", 19), ("Right Shoulder", 17),
    ("Left Shoulder", 16), ("Left Elbow", 18), ("Left Wrist", 20), ("Neck (LSP)", 47),
    ("Top of Head (LSP)", 48), ("Pelvis (MPII)", 49), ("Thorax (MPII)", 50), ("Spine (H36M)", 51),
    ("Jaw (H36M)", 52), ("Head (H36M)", 53), ("Nose", 24), ("Left Eye", 26), ("Right Eye", 25),
    ("Left Ear", 28), ("Right Ear", 27),
)
JOINTS49_NAMES = tuple(name for name, _ in JOINTS49)
JOINTS49_SOURCE = np.array([src for _, src in JOINTS49], dtype=np.int64)
NUM_OPENPOSE_JOINTS = 25
NUM_JOINTS49 = len(JOINTS49_NAMES)  # 25 OpenPose + 24 ground-truth joints (SPIN's order)
NUM_GT_JOINTS = NUM_JOINTS49 - NUM_OPENPOSE_JOINTS  # 24: the annotated 2D/3D joints (`part`, `S`)
