"""Reading results: summaries, the report, the verdict, remedy tables, cohorts and figures.

Importable without TensorFlow."""
