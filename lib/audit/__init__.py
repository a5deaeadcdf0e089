"""The audit layer: what a pair computes for each measure, screening, and the report
(schema, assessment, summary, heatmap, publication)."""
