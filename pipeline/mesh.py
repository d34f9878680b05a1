"""Small triangle-mesh helpers shared by the demo world and the clothing prior."""

from __future__ import annotations

import numpy as np


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit normals, area-weighted over each vertex's faces (trimesh's)."""
    import trimesh

    return np.asarray(trimesh.Trimesh(vertices, faces, process=False).vertex_normals)


def vertex_adjacency(faces: np.ndarray, num_vertices: int):
    """(V, V) sparse CSR matrix with 1 where two vertices share an edge (no self loops)."""
    import scipy.sparse

    rows = faces[:, [0, 1, 2, 1, 2, 0]].ravel()
    cols = faces[:, [1, 2, 0, 0, 1, 2]].ravel()
    adj = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_vertices, num_vertices)).tocsr()
    adj.data[:] = 1.0
    return adj
