"""The audit layer: one run's plan (``plan``), a dataset's preparation (``prepare``), what a
pair computes for each measure (``measures``), screening (``screen``), and the report
(``tables`` schema, ``report`` rows/assessment/summary/reading, ``heatmap``, ``publish``).
See docs/ARCHITECTURE.md."""
