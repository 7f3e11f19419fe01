"""Nightly pipelines: a YAML file of scheduled runs that chain moderate, translate and write steps.

`spec` parses and validates the file, `filters` decides which items reach the next step,
`sources` and `exports` read input and write output, `runner` executes one run, `store`
keeps the run rows, and `schedule` turns cron lines into Celery beat entries.
"""
