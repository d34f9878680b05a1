"""Training code: the loader of packed HDF5 files (`packed`), its augmentation (`augment`), and the
trainer of the tiny demo parser (`demo_parser`) that stands in for Graphonomy's weights in the demo.
It depends on the pack format (`pipeline.pack_format`) and the label and joint tables, not on the
stages that write the files."""
