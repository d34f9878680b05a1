"""Neural network modules (Graphonomy) and the checkpoint reader every model family loads through."""
