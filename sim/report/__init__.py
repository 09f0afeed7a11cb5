"""What users look at: the run report (plots + HTML, ``run_report``), the shared HTML page builder, and the
experiment pages of ``size``/``compare``/``sweep``.
"""
